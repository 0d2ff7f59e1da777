use super::*;

fn rec(action: &str) -> AuditRecord {
    AuditRecord {
        time: "2026-11-28T00:00:00Z".into(),
        tenant_id: Some("tn_1".into()),
        token_id: Some("tok_1".into()),
        action: action.into(),
        object_id: None,
        outcome: "success".into(),
        request_id: Some("req".into()),
        detail: None,
    }
}

fn store_with(n: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("db.sqlite")).unwrap();
    s.write(|tx| {
        tx.insert_tenant(&TenantRow {
            id: "tn_1".into(),
            name: "default".into(),
            created_at: "x".into(),
        })
    })
    .unwrap();
    for i in 0..n {
        s.write(|tx| tx.append_audit(&rec(&format!("a{i}"))))
            .unwrap();
    }
    (dir, s)
}

fn raw(s: &Store, sql: &str) {
    let c = rusqlite::Connection::open(s.path()).unwrap();
    c.execute_batch(sql).unwrap();
}

#[test]
fn intact_chain_verifies_and_reopen_keeps_it() {
    let (dir, s) = store_with(5);
    let check = s.read(|tx| tx.verify_audit()).unwrap();
    assert_eq!(
        check,
        ChainCheck {
            records: 5,
            first_bad: None
        }
    );
    drop(s);
    let s = Store::open(&dir.path().join("db.sqlite")).unwrap();
    s.write(|tx| tx.append_audit(&rec("after-reopen"))).unwrap();
    assert_eq!(s.read(|tx| tx.verify_audit()).unwrap().first_bad, None);
}

#[test]
fn edits_deletions_swaps_and_duplicates_are_detected() {
    let cases = [
        ("UPDATE audit SET outcome = 'denied' WHERE seq = 3", 3),
        ("DELETE FROM audit WHERE seq = 2", 2),
        ("DELETE FROM audit WHERE seq = 5", 5),
        (
            "UPDATE audit SET seq = -1 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = -1",
            2,
        ),
        (
            "INSERT INTO audit (seq, time, tenant_id, token_id, action, object_id, outcome, request_id, prev_hash, hash) \
             SELECT 6, time, tenant_id, token_id, action, object_id, outcome, request_id, prev_hash, hash FROM audit WHERE seq = 3",
            6,
        ),
    ];
    for (sql, bad_seq) in cases {
        let (_d, s) = store_with(5);
        raw(&s, sql);
        let check = s.read(|tx| tx.verify_audit()).unwrap();
        let (seq, why) = check
            .first_bad
            .unwrap_or_else(|| panic!("not detected: {sql}"));
        assert_eq!(seq, bad_seq, "{sql}: {why}");
    }
}

#[test]
fn a_failed_write_leaves_nothing() {
    let (_d, s) = store_with(1);
    let r: Result<()> = s.write(|tx| {
        tx.append_audit(&rec("half"))?;
        Err(Error::Conflict("boom".into()))
    });
    assert!(r.is_err());
    let page = s.read(|tx| tx.list_audit(None, None, 100)).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(s.read(|tx| tx.verify_audit()).unwrap().first_bad, None);
}

#[test]
fn pagination_and_tenant_conflicts() {
    let (_d, s) = store_with(5);
    let p1 = s.read(|tx| tx.list_audit(None, None, 2)).unwrap();
    assert_eq!(p1.items.len(), 2);
    let p2 = s
        .read(|tx| tx.list_audit(None, p1.next_cursor.as_deref(), 10))
        .unwrap();
    assert_eq!(p2.items.len(), 3);
    assert_eq!(p2.next_cursor, None);
    let dup = s.write(|tx| {
        tx.insert_tenant(&TenantRow {
            id: "tn_2".into(),
            name: "default".into(),
            created_at: "x".into(),
        })
    });
    assert!(matches!(dup, Err(Error::Conflict(_))));
}

#[test]
fn group_commit_isolates_failing_jobs_and_keeps_the_chain() {
    let (_d, s) = store_with(0);
    let s = std::sync::Arc::new(s);
    let mut handles = Vec::new();
    for i in 0..64u32 {
        let s = s.clone();
        handles.push(std::thread::spawn(move || {
            s.write_batched(Box::new(move |tx| {
                tx.append_audit(&rec(&format!("batched-{i}")))?;
                if i.is_multiple_of(5) {
                    return Err(Error::Conflict("this job fails".into()));
                }
                Ok(())
            }))
        }));
    }
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 13);
    let page = s.read(|tx| tx.list_audit(None, None, 1000)).unwrap();
    assert_eq!(page.items.len(), 64 - 13, "failed jobs left nothing behind");
    assert!(page.items.iter().all(|r| {
        let n: usize = r.action.trim_start_matches("batched-").parse().unwrap();
        !n.is_multiple_of(5)
    }));
    assert_eq!(s.read(|tx| tx.verify_audit()).unwrap().first_bad, None);
    // Direct writes interleave with batches.
    s.write(|tx| tx.append_audit(&rec("direct"))).unwrap();
    s.write_batched(Box::new(|tx| tx.append_audit(&rec("after")).map(|_| ())))
        .unwrap();
    assert_eq!(
        s.read(|tx| tx.verify_audit()).unwrap(),
        ChainCheck {
            records: 53,
            first_bad: None
        }
    );
}

#[test]
fn a_detail_is_part_of_the_chain() {
    let (_d, s) = store_with(2);
    let mut r = rec("with-detail");
    r.detail = Some("unknown vendor".into());
    s.write(|tx| tx.append_audit(&r)).unwrap();
    s.write(|tx| tx.append_audit(&rec("after"))).unwrap();
    assert_eq!(s.read(|tx| tx.verify_audit()).unwrap().first_bad, None);
    let page = s.read(|tx| tx.list_audit(None, None, 10)).unwrap();
    assert_eq!(page.items[2].detail.as_deref(), Some("unknown vendor"));
    raw(
        &s,
        "UPDATE audit SET detail = 'approved after all' WHERE seq = 3",
    );
    assert_eq!(
        s.read(|tx| tx.verify_audit())
            .unwrap()
            .first_bad
            .map(|b| b.0),
        Some(3)
    );
}

#[test]
fn wal_only_and_disk_jobs_share_batches_and_both_commit() {
    let (_d, s) = store_with(0);
    let s = std::sync::Arc::new(s);
    let mut handles = Vec::new();
    for i in 0..40u32 {
        let s = s.clone();
        handles.push(std::thread::spawn(move || {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let durability = if i.is_multiple_of(2) {
                crate::Durability::Wal
            } else {
                crate::Durability::Disk
            };
            s.submit_with(
                Box::new(move |t| t.append_audit(&rec(&format!("mixed-{i}"))).map(|_| ())),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
                durability,
            );
            rx.recv().unwrap()
        }));
    }
    for h in handles {
        h.join().unwrap().unwrap();
    }
    // A WAL-only job on its own (the writer switches to synchronous=NORMAL and back).
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    s.submit_with(
        Box::new(|t| t.append_audit(&rec("wal-alone")).map(|_| ())),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
        crate::Durability::Wal,
    );
    rx.recv().unwrap().unwrap();
    s.write_batched(Box::new(|tx| {
        tx.append_audit(&rec("disk-after")).map(|_| ())
    }))
    .unwrap();
    assert_eq!(
        s.read(|tx| tx.verify_audit()).unwrap(),
        ChainCheck {
            records: 42,
            first_bad: None
        }
    );
}
