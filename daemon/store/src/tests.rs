use super::*;
use crate::testutil::{both_backends, cert_row as cert, fixture, Fixture, Kind};
use std::time::Duration;

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

/// A store of `kind` with a tenant and `n` audit records; `None` when the backend is skipped.
fn store_with(kind: Kind, n: usize) -> Option<Fixture> {
    let f = fixture(kind)?;
    let s = &f.store;
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
    Some(f)
}

fn intact_chain_verifies_and_reopen_keeps_it(kind: Kind) {
    let Some(mut f) = store_with(kind, 5) else {
        return;
    };
    let check = f.store.read(|tx| tx.verify_audit()).unwrap();
    assert_eq!(
        check,
        ChainCheck {
            records: 5,
            first_bad: None
        }
    );
    f.reopen();
    let s = &f.store;
    s.write(|tx| tx.append_audit(&rec("after-reopen"))).unwrap();
    assert_eq!(s.read(|tx| tx.verify_audit()).unwrap().first_bad, None);
}

fn edits_deletions_swaps_and_duplicates_are_detected(kind: Kind) {
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
        let Some(f) = store_with(kind, 5) else {
            return;
        };
        f.raw(sql);
        let check = f.store.read(|tx| tx.verify_audit()).unwrap();
        let (seq, why) = check
            .first_bad
            .unwrap_or_else(|| panic!("not detected: {sql}"));
        assert_eq!(seq, bad_seq, "{sql}: {why}");
    }
}

fn a_failed_write_leaves_nothing(kind: Kind) {
    let Some(f) = store_with(kind, 1) else {
        return;
    };
    let s = &f.store;
    let r: Result<()> = s.write(|tx| {
        tx.append_audit(&rec("half"))?;
        Err(Error::Conflict("boom".into()))
    });
    assert!(r.is_err());
    let page = s.read(|tx| tx.list_audit(None, None, 100)).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(s.read(|tx| tx.verify_audit()).unwrap().first_bad, None);
}

fn pagination_and_tenant_conflicts(kind: Kind) {
    let Some(f) = store_with(kind, 5) else {
        return;
    };
    let s = &f.store;
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

fn group_commit_isolates_failing_jobs_and_keeps_the_chain(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    let s = std::sync::Arc::new(f.open_again());
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

fn a_detail_is_part_of_the_chain(kind: Kind) {
    let Some(f) = store_with(kind, 2) else {
        return;
    };
    let s = &f.store;
    let mut r = rec("with-detail");
    r.detail = Some("unknown vendor".into());
    s.write(|tx| tx.append_audit(&r)).unwrap();
    s.write(|tx| tx.append_audit(&rec("after"))).unwrap();
    assert_eq!(s.read(|tx| tx.verify_audit()).unwrap().first_bad, None);
    let page = s.read(|tx| tx.list_audit(None, None, 10)).unwrap();
    assert_eq!(page.items[2].detail.as_deref(), Some("unknown vendor"));
    f.raw("UPDATE audit SET detail = 'approved after all' WHERE seq = 3");
    assert_eq!(
        s.read(|tx| tx.verify_audit())
            .unwrap()
            .first_bad
            .map(|b| b.0),
        Some(3)
    );
}

fn wal_only_and_disk_jobs_share_batches_and_both_commit(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    let s = std::sync::Arc::new(f.open_again());
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

both_backends!(
    intact_chain_verifies_and_reopen_keeps_it,
    edits_deletions_swaps_and_duplicates_are_detected,
    a_failed_write_leaves_nothing,
    pagination_and_tenant_conflicts,
    group_commit_isolates_failing_jobs_and_keeps_the_chain,
    a_detail_is_part_of_the_chain,
    wal_only_and_disk_jobs_share_batches_and_both_commit,
    two_stores_append_audit_concurrently_into_one_chain,
    crl_numbers_from_two_stores_are_distinct_and_consecutive,
    a_csr_transition_raced_from_two_stores_has_one_winner,
    leadership_is_exclusive_and_moves,
    two_stores_migrating_at_once_and_a_newer_schema_is_refused,
    a_crl_is_stored_only_over_an_older_one,
    revocations_since_lists_revocations_in_time_order,
    ocsp_responses_are_stored_only_while_the_status_holds,
    a_conflict_does_not_spoil_the_transaction,
    conditional_claims_have_one_winner,
);

fn tenant(id: &str) -> TenantRow {
    TenantRow {
        id: id.into(),
        name: id.into(),
        created_at: "x".into(),
    }
}

fn ca(id: &str) -> CaRow {
    CaRow {
        id: id.into(),
        tenant_id: "tn_1".into(),
        name: id.into(),
        common_name: id.into(),
        ca_type: "root".into(),
        parent_ca_id: None,
        status: "active".into(),
        key_type: "ec".into(),
        key_size: 256,
        key_label: format!("label-{id}"),
        cert_der: Some(vec![1, 2, 3]),
        chain_pem: None,
        csr_pem: None,
        serial: None,
        not_before: None,
        not_after: None,
        settings: "{}".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
    }
}

/// Runs `f(store, thread)` on `per_store` threads for each of two stores on one database, all
/// released at once; returns the results in thread order.
fn race<T: Send + 'static>(
    f: &Fixture,
    per_store: usize,
    job: impl Fn(&Store, usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let stores = [
        std::sync::Arc::new(f.open_again()),
        std::sync::Arc::new(f.open_again()),
    ];
    let job = std::sync::Arc::new(job);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2 * per_store));
    let mut handles = Vec::new();
    for i in 0..2 * per_store {
        let s = stores[i % 2].clone();
        let job = job.clone();
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(move || {
            barrier.wait();
            job(&s, i)
        }));
    }
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn two_stores_append_audit_concurrently_into_one_chain(kind: Kind) {
    let Some(f) = store_with(kind, 3) else {
        return;
    };
    let results = race(&f, 4, |s, i| {
        for n in 0..25 {
            let r = rec(&format!("t{i}-{n}"));
            if n % 2 == 0 {
                s.write(|tx| tx.append_audit(&r).map(|_| ()))?;
            } else {
                s.write_batched(Box::new(move |tx| tx.append_audit(&r).map(|_| ())))?;
            }
        }
        Ok::<_, Error>(())
    });
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        f.store.read(|tx| tx.verify_audit()).unwrap(),
        ChainCheck {
            records: 3 + 8 * 25,
            first_bad: None
        }
    );
    let all = f.store.read(|tx| tx.list_audit(None, None, 1000)).unwrap();
    for i in 0..8 {
        for n in 0..25 {
            let action = format!("t{i}-{n}");
            assert!(
                all.items.iter().any(|r| r.action == action),
                "{action} missing"
            );
        }
    }
}

fn crl_numbers_from_two_stores_are_distinct_and_consecutive(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    f.store.write(|tx| tx.insert_ca(&ca("ca_1"))).unwrap();
    let numbers = race(&f, 3, |s, _| {
        (0..15)
            .map(|_| s.write(|tx| tx.next_crl_number("ca_1")).unwrap())
            .collect::<Vec<i64>>()
    });
    let mut all: Vec<i64> = numbers.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=90).collect::<Vec<i64>>());
}

fn a_csr_transition_raced_from_two_stores_has_one_winner(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    for k in 0..10 {
        let id = format!("csr_{k}");
        f.store
            .write(|tx| {
                tx.insert_csr(&CsrRow {
                    id: id.clone(),
                    tenant_id: "tn_1".into(),
                    status: "pending".into(),
                    csr_der: vec![1],
                    summary: "{}".into(),
                    note: None,
                    requested_by: "tok_1".into(),
                    created_at: "x".into(),
                    decided_by: None,
                    decided_at: None,
                    comment: None,
                    reason: None,
                    signed_ca_id: None,
                    signed_serial: None,
                    signed_at: None,
                })
            })
            .unwrap();
        let outcomes = race(&f, 2, move |s, i| {
            let to = if i % 2 == 0 { "approved" } else { "rejected" };
            let by = format!("tok_{i}");
            s.write(|tx| tx.transition_csr("tn_1", &id, "pending", to, Some(&by), "t", None, None))
        });
        let wins = outcomes.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{outcomes:?}");
        assert!(outcomes
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, Error::Conflict(s) if s == "approved" || s == "rejected")));
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn leadership_is_exclusive_and_moves(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    let a = f.open_again();
    let b = f.open_again();
    assert!(a.try_lead().unwrap());
    if kind == Kind::Sqlite {
        // One node: always the leader.
        assert!(b.try_lead().unwrap());
        return;
    }
    assert!(!b.try_lead().unwrap());
    assert!(a.try_lead().unwrap(), "the leader stays the leader");
    assert!(!b.try_lead().unwrap());
    a.step_down();
    wait_for("b to lead", || b.try_lead().unwrap());
    assert!(!a.try_lead().unwrap());
    // The leader's store goes away (as when its process dies): the lock goes with it.
    drop(b);
    wait_for("a to lead", || a.try_lead().unwrap());
    // Its connection killed: the leader notices on its next check and steps down.
    f.pg.as_ref().unwrap().terminate_sessions();
    let c = f.open_again();
    wait_for("c to lead", || c.try_lead().unwrap());
    assert!(!a.try_lead().unwrap());
}

fn two_stores_migrating_at_once_and_a_newer_schema_is_refused(kind: Kind) {
    // A fresh database, opened by two stores at the same moment.
    let Some(f) = fixture(kind) else {
        return;
    };
    let opened = race(&f, 1, |s, _| s.ping());
    assert!(opened.iter().all(Result::is_ok));
    let known = i64::try_from(MIGRATIONS.len()).unwrap();
    assert_eq!(known, i64::try_from(PG_MIGRATIONS.len()).unwrap());
    match kind {
        Kind::Sqlite => f.raw(&format!("PRAGMA user_version = {}", known + 1)),
        Kind::Postgres => f.raw(&format!(
            "UPDATE schema_version SET version = {}",
            known + 1
        )),
    }
    let err = match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("db.sqlite");
            drop(Store::open(&p).unwrap());
            rusqlite::Connection::open(&p)
                .unwrap()
                .execute_batch(&format!("PRAGMA user_version = {}", known + 1))
                .unwrap();
            Store::open(&p).unwrap_err()
        }
        Kind::Postgres => Store::open_postgres(&f.pg.as_ref().unwrap().config()).unwrap_err(),
    };
    assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
}

/// Another application's SQLite file (a `storage.path` typed wrong) is refused, and left as it
/// was: no WAL mode, no ScaiVault tables. An empty file is a new database.
#[test]
fn another_applications_sqlite_file_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.db");
    let other = rusqlite::Connection::open(&p).unwrap();
    other
        .execute_batch("CREATE TABLE users (id INTEGER); CREATE TABLE orders (id INTEGER);")
        .unwrap();
    drop(other);
    let before = std::fs::read(&p).unwrap();
    let err = Store::open(&p).unwrap_err();
    let Error::Corrupt(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(
        msg.contains("another application's tables (orders, users)") && msg.contains("app.db"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&p).unwrap(), before, "the file was changed");
    assert!(!dir.path().join("app.db-wal").exists());
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    Store::open(&empty).unwrap().ping().unwrap();
}

fn a_crl_is_stored_only_over_an_older_one(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    let s = &f.store;
    assert_eq!(s.read(|tx| tx.crl_der("ca_1")).unwrap(), None);
    assert_eq!(s.read(|tx| tx.crl_number_stored("ca_1")).unwrap(), None);
    assert!(s.write(|tx| tx.store_crl_der("ca_1", 5, b"five")).unwrap());
    assert!(!s.write(|tx| tx.store_crl_der("ca_1", 3, b"three")).unwrap());
    assert!(!s.write(|tx| tx.store_crl_der("ca_1", 5, b"again")).unwrap());
    assert_eq!(
        s.read(|tx| tx.crl_der("ca_1")).unwrap(),
        Some((5, b"five".to_vec()))
    );
    assert!(s.write(|tx| tx.store_crl_der("ca_1", 6, b"six")).unwrap());
    assert!(s.write(|tx| tx.store_crl_der("ca_2", 1, b"other")).unwrap());
    assert_eq!(
        s.read(|tx| tx.crl_der("ca_1")).unwrap(),
        Some((6, b"six".to_vec()))
    );
}

fn ocsp_row(ca_id: &str, serial: &str, status: &str, this_update: &str) -> OcspResponseRow {
    OcspResponseRow {
        ca_id: ca_id.into(),
        serial: serial.into(),
        cert_id: vec![1, 2],
        der: format!("{status} {this_update}").into_bytes(),
        status: status.into(),
        this_update: this_update.into(),
        next_update: "2026-06-02T00:00:00Z".into(),
        refresh_at: "2026-06-01T12:00:00Z".into(),
    }
}

/// A response lands only while the certificate's status is the one it encodes: a `good` signed
/// before a revocation and stored after it is refused, and the revocation's delete leaves none.
fn ocsp_responses_are_stored_only_while_the_status_holds(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    let s = &f.store;
    let t1 = "2026-06-01T00:00:00Z";
    let t2 = "2026-06-01T00:10:00Z";
    s.write(|tx| {
        tx.insert_ca(&ca("ca_1"))?;
        tx.insert_certificate(&cert("ca_1", "0A"))?;
        let mut r = cert("ca_1", "0B");
        r.status = "reserved".into();
        r.cert_der = None;
        tx.reserve_certificate(&r, b"tbs", None)
    })
    .unwrap();
    let put = |row: OcspResponseRow| s.write(|tx| tx.put_ocsp_response(&row)).unwrap();
    let get = |serial: &str| {
        s.read(|tx| tx.ocsp_response("ca_1", serial, &[1, 2]))
            .unwrap()
            .map(|r| r.status)
    };
    // Only the status the inventory holds.
    assert!(!put(ocsp_row("ca_1", "0A", "revoked", t1)));
    assert!(!put(ocsp_row("ca_1", "0A", "unknown", t1)));
    assert!(put(ocsp_row("ca_1", "0A", "good", t1)));
    // A reserved serial and a serial never issued are `unknown`.
    assert!(!put(ocsp_row("ca_1", "0B", "good", t1)));
    assert!(put(ocsp_row("ca_1", "0B", "unknown", t1)));
    assert!(put(ocsp_row("ca_1", "0C", "unknown", t1)));
    // A newer response replaces an older one, never the reverse.
    assert!(put(ocsp_row("ca_1", "0A", "good", t2)));
    assert!(!put(ocsp_row("ca_1", "0A", "good", t1)));
    let row = s
        .read(|tx| tx.ocsp_response("ca_1", "0A", &[1, 2]))
        .unwrap()
        .unwrap();
    assert_eq!(row.this_update, t2);
    assert_eq!(
        s.read(|tx| tx.ocsp_response("ca_1", "0A", &[9])).unwrap(),
        None
    );
    // Revocation and the delete in one transaction: the `good` signed before it cannot land after.
    s.write(|tx| {
        tx.revoke_certificate("tn_1", "0A", t2, "key_compromise")?;
        tx.delete_ocsp_responses("ca_1", "0A")
    })
    .unwrap();
    assert_eq!(get("0A"), None);
    assert!(!put(ocsp_row("ca_1", "0A", "good", t2)));
    assert_eq!(get("0A"), None);
    assert!(put(ocsp_row("ca_1", "0A", "revoked", t2)));
    assert_eq!(get("0A").as_deref(), Some("revoked"));
    // Due for refresh, soonest first, bounded; expired ones are dropped.
    let mut later = ocsp_row("ca_1", "0C", "unknown", t2);
    later.refresh_at = "2026-06-01T18:00:00Z".into();
    assert!(put(later));
    let due = s
        .read(|tx| tx.ocsp_responses_due("2026-06-01T12:00:00Z", 10))
        .unwrap();
    assert_eq!(due.len(), 2, "{due:?}");
    assert_eq!(
        s.read(|tx| tx.ocsp_responses_due("2099-01-01T00:00:00Z", 1))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.write(|tx| tx.delete_ocsp_responses_expired("2026-06-01T13:00:00Z"))
            .unwrap(),
        0
    );
    assert_eq!(
        s.write(|tx| tx.delete_ocsp_responses_expired("2026-06-03T00:00:00Z"))
            .unwrap(),
        3
    );
}

fn revocations_since_lists_revocations_in_time_order(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    let s = &f.store;
    s.write(|tx| {
        tx.insert_ca(&ca("ca_1"))?;
        for serial in ["0A", "0B", "0C", "0D"] {
            tx.insert_certificate(&cert("ca_1", serial))?;
        }
        tx.revoke_certificate("tn_1", "0C", "2026-05-01T10:00:00Z", "key_compromise")?;
        tx.revoke_certificate("tn_1", "0A", "2026-05-01T11:00:00Z", "superseded")?;
        tx.revoke_certificate("tn_1", "0B", "2026-04-01T00:00:00Z", "superseded")?;
        Ok(())
    })
    .unwrap();
    let got = s
        .read(|tx| tx.revocations_since("2026-05-01T00:00:00Z", 10))
        .unwrap();
    assert_eq!(
        got,
        vec![
            ("ca_1".into(), "0C".into(), "2026-05-01T10:00:00Z".into()),
            ("ca_1".into(), "0A".into(), "2026-05-01T11:00:00Z".into()),
        ]
    );
    assert_eq!(
        s.read(|tx| tx.revocations_since("2026-01-01T00:00:00Z", 1))
            .unwrap()[0]
            .1,
        "0B"
    );
    // A second revocation of the same certificate is a conflict, also when raced.
    let again = s.write(|tx| tx.revoke_certificate("tn_1", "0A", "t", "superseded"));
    assert!(matches!(again, Err(Error::Conflict(_))));
    let raced = race(&f, 2, |s, _| {
        s.write(|tx| tx.revoke_certificate("tn_1", "0D", "2026-06-01T00:00:00Z", "superseded"))
    });
    assert_eq!(raced.iter().filter(|r| r.is_ok()).count(), 1, "{raced:?}");
    // Summaries read back integers on both backends.
    let (published, dirty, _) = s.read(|tx| tx.crl_summary()).unwrap();
    assert_eq!((published, dirty), (0, 1));
    let (total, revoked, cas) = s
        .read(|tx| {
            tx.tidy_certificates(
                "tn_1",
                "2099-01-01T00:00:00Z",
                "2099-01-01T00:00:00Z",
                false,
            )
        })
        .unwrap();
    assert_eq!((total, revoked, cas), (4, 4, vec!["ca_1".to_owned()]));
}

fn a_conflict_does_not_spoil_the_transaction(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    let s = &f.store;
    s.write(|tx| {
        let dup = tx.insert_tenant(&TenantRow {
            id: "tn_x".into(),
            name: "default".into(),
            created_at: "x".into(),
        });
        assert!(matches!(dup, Err(Error::Conflict(_))));
        tx.insert_tenant(&tenant("tn_2"))?;
        tx.insert_ca(&ca("ca_1"))?;
        assert!(matches!(tx.insert_ca(&ca("ca_1")), Err(Error::Conflict(_))));
        tx.insert_certificate(&cert("ca_1", "01"))?;
        assert!(matches!(
            tx.insert_certificate(&cert("ca_1", "01")),
            Err(Error::Conflict(_))
        ));
        tx.append_audit(&rec("after-conflicts")).map(|_| ())
    })
    .unwrap();
    let names: Vec<String> = s
        .read(|tx| tx.list_tenants())
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["default".to_owned(), "tn_2".to_owned()]);
    assert_eq!(s.read(|tx| tx.verify_audit()).unwrap().records, 1);
    // A failed batched job's savepoint leaves the batch usable on both backends.
    let r = s.write_batched(Box::new(|tx| tx.insert_tenant(&tenant("tn_2"))));
    assert!(matches!(r, Err(Error::Conflict(_))));
    s.write_batched(Box::new(|tx| tx.insert_tenant(&tenant("tn_3"))))
        .unwrap();
}

fn conditional_claims_have_one_winner(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    let s = &f.store;
    s.write(|tx| {
        tx.insert_webhook(&WebhookRow {
            id: "wh_1".into(),
            tenant_id: "tn_1".into(),
            url: "http://127.0.0.1:1/".into(),
            events: "[\"*\"]".into(),
            secret_enc: vec![1],
            created_at: "x".into(),
            cursor: 0,
        })?;
        tx.insert_event("tn_1", "certificate.issued", None, "t", "{}")?;
        let d = WebhookDeliveryRow {
            id: "whd_1".into(),
            webhook_id: "wh_1".into(),
            event_seq: 1,
            event_type: "certificate.issued".into(),
            status: "pending".into(),
            attempts: 0,
            next_attempt_ms: Some(0),
            last_http_status: None,
            last_error: None,
            created_at: "x".into(),
            updated_at: "x".into(),
        };
        assert!(tx.enqueue_deliveries("wh_1", &[d], 1)?);
        Ok(())
    })
    .unwrap();
    let claims = race(&f, 2, |s, _| {
        s.write(|tx| tx.claim_delivery("whd_1", 0, 1_000, 31_000))
            .unwrap()
    });
    assert_eq!(claims.iter().filter(|c| **c).count(), 1);
    // The attempt's outcome is recorded once; a replay of the same attempt is refused.
    let mut d = s
        .read(|tx| tx.next_pending_delivery("wh_1"))
        .unwrap()
        .unwrap();
    assert_eq!(d.next_attempt_ms, Some(31_000));
    // The claim counted the attempt, whatever becomes of its outcome.
    assert_eq!(d.attempts, 1);
    d.next_attempt_ms = Some(60_000);
    assert!(s.write(|tx| tx.update_delivery(&d)).unwrap());
    // Once another node has claimed the next attempt, this attempt's outcome is stale.
    assert!(s
        .write(|tx| tx.claim_delivery("whd_1", 1, 60_000, 90_000))
        .unwrap());
    assert!(!s.write(|tx| tx.update_delivery(&d)).unwrap());
    let now = s
        .read(|tx| tx.next_pending_delivery("wh_1"))
        .unwrap()
        .unwrap();
    assert_eq!((now.attempts, now.next_attempt_ms), (2, Some(90_000)));
}

/// The server ends every session (a restart or failover, as clients see it): the store's next
/// calls reconnect, and at most one of them fails.
#[test]
fn a_store_reconnects_after_its_sessions_are_terminated() {
    let Some(f) = store_with(Kind::Postgres, 1) else {
        return;
    };
    let s = &f.store;
    let db = f.pg.as_ref().unwrap();
    for round in 0..3 {
        s.ping().unwrap();
        s.write_batched(Box::new(|tx| tx.append_audit(&rec("batched")).map(|_| ())))
            .unwrap();
        assert!(db.terminate_sessions() >= 4, "round {round}");
        let mut failures = 0;
        for _ in 0..6 {
            if s.ping().is_err() {
                failures += 1;
            }
        }
        assert!(failures <= 1, "round {round}: {failures} failed pings");
        let mut failures = 0;
        for i in 0..3 {
            let r = if i % 2 == 0 {
                s.write(|tx| tx.append_audit(&rec("direct")).map(|_| ()))
            } else {
                s.write_batched(Box::new(|tx| tx.append_audit(&rec("b")).map(|_| ())))
            };
            if let Err(e) = r {
                assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
                failures += 1;
            }
        }
        assert!(failures <= 1, "round {round}: {failures} failed writes");
    }
    assert_eq!(s.read(|tx| tx.verify_audit()).unwrap().first_bad, None);
    // Lookups (no transaction) retry once on a fresh connection: none fails.
    for round in 0..3 {
        for _ in 0..4 {
            s.lookup(|tx| tx.ping()).unwrap();
        }
        assert!(db.terminate_sessions() >= 1, "round {round}");
        for i in 0..6 {
            s.lookup(|tx| tx.ping())
                .unwrap_or_else(|e| panic!("round {round}, lookup {i}: {e}"));
        }
    }
}

/// TLS to the database: the server's certificate is checked against the CA file and its name.
/// Uses the self-signed certificate Debian's PostgreSQL serves (`localhost`).
#[test]
fn tls_to_the_database_checks_the_server_certificate() {
    let Some(f) = store_with(Kind::Postgres, 0) else {
        return;
    };
    let snakeoil = std::path::PathBuf::from("/etc/ssl/certs/ssl-cert-snakeoil.pem");
    let ssl_on =
        f.pg.as_ref()
            .unwrap()
            .client()
            .query_one("SHOW ssl", &[])
            .map(|r| r.get::<_, String>(0) == "on")
            .unwrap_or(false);
    if !snakeoil.exists() || !ssl_on {
        eprintln!("the server has no TLS certificate: TLS test skipped");
        return;
    }
    let plain = f.pg.as_ref().unwrap().config();
    assert!(!f.store.read(|tx| tx.pg_ssl_in_use()).unwrap());
    let localhost = plain.url.replace("@127.0.0.1:", "@localhost:");
    let tls = PgConfig {
        url: format!("{localhost}?sslmode=verify-full"),
        pool_size: 1,
        ca_file: Some(snakeoil.clone()),
        call_limit: None,
    };
    let s = Store::open_postgres(&tls).unwrap();
    assert!(s.read(|tx| tx.pg_ssl_in_use()).unwrap());
    s.write(|tx| tx.append_audit(&rec("over-tls")).map(|_| ()))
        .unwrap();
    // The name must match the certificate.
    let wrong_name = PgConfig {
        url: plain.url.clone(),
        pool_size: 1,
        ca_file: Some(snakeoil),
        call_limit: None,
    };
    let err = Store::open_postgres(&wrong_name).unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    // A CA file that holds no certificate is refused before connecting.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = Store::open_postgres(&PgConfig {
        url: format!("{localhost}?sslmode=verify-full"),
        pool_size: 1,
        ca_file: Some(empty),
        call_limit: None,
    })
    .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
}

both_backends!(every_method_runs, acme_methods_run);

/// Every typed method once, so that a statement PostgreSQL cannot type or run shows up here and
/// not in a daemon test.
fn every_method_runs(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    let s = &f.store;
    let now = "2026-06-01T00:00:00Z";
    s.write(|tx| {
        // tokens
        let tok = TokenRow {
            id: "tok_a".into(),
            tenant_id: "tn_1".into(),
            name: Some("n".into()),
            policies: vec!["admin".into()],
            created_at: now.into(),
            expires_at: None,
            revoked_at: None,
        };
        tx.insert_token(&tok, &[7; 32])?;
        let (t, h) = tx.token_by_id("tok_a")?;
        assert_eq!((t.policies, h), (vec!["admin".to_owned()], vec![7; 32]));
        assert_eq!(tx.list_tokens(None, None, 10)?.items.len(), 1);
        assert_eq!(tx.list_tokens(Some("tn_1"), None, 10)?.items.len(), 1);
        tx.revoke_token("tok_a", Some("tn_1"), now)?;
        assert!(matches!(
            tx.revoke_token("tok_a", None, now),
            Err(Error::NotFound)
        ));
        // CAs
        let mut c = ca("ca_1");
        tx.insert_ca(&c)?;
        c.status = "retired".into();
        c.serial = Some("01".into());
        tx.update_ca(&c)?;
        assert!(tx.ca_name_taken("tn_1", "ca_1")?);
        assert_eq!(tx.get_ca("tn_1", "ca_1")?.status, "retired");
        assert_eq!(tx.get_ca_any_tenant("ca_1")?.key_size, 256);
        assert!(matches!(tx.get_ca("tn_x", "ca_1"), Err(Error::NotFound)));
        let p = tx.list_cas("tn_1", None, 1)?;
        assert_eq!(p.items.len(), 1);
        assert!(p.next_cursor.is_none());
        // certificates
        let mut r = cert("ca_1", "0R");
        r.status = "reserved".into();
        r.cert_der = None;
        tx.reserve_certificate(&r, b"tbs", None)?;
        tx.complete_certificate(&cert("ca_1", "0R"))?;
        assert!(matches!(
            tx.complete_certificate(&cert("ca_1", "0R")),
            Err(Error::NotFound)
        ));
        tx.reserve_certificate(&r_with(&r, "0S"), b"tbs", None)?;
        tx.release_serial("ca_1", "0S")?;
        let started = AuditRecord {
            action: "certificate.issue".into(),
            outcome: "started".into(),
            token_id: Some("tok_1".into()),
            ..AuditRecord::default()
        };
        tx.reserve_certificate(&r_with(&r, "0T"), b"tbs", Some(&started_json(&started)?))?;
        tx.reserve_certificate(&r_with(&r, "0U"), b"tbs", None)?;
        assert_eq!(
            tx.reconcile_stale_reservations(now, "2025-01-01T00:00:00Z")?
                .len(),
            0
        );
        // The reconciliation hands back the `started` record a reservation row kept.
        let mut done = tx.reconcile_reservations(now)?;
        done.sort_by(|a, b| a.serial.cmp(&b.serial));
        let kept: Vec<_> = done
            .iter()
            .map(|u| (u.serial.as_str(), u.started.as_ref()))
            .collect();
        assert_eq!(kept, vec![("0T", Some(&started)), ("0U", None)]);
        assert!(tx.reconcile_reservations(now)?.is_empty());
        tx.insert_stored_key(&StoredKeyRow {
            issuer_ca_id: "ca_1".into(),
            serial: "0R".into(),
            wrapped_key: vec![1],
            sealed: vec![2],
        })?;
        assert_eq!(tx.get_stored_key("ca_1", "0R")?.sealed, vec![2]);
        assert_eq!(tx.get_certificate("tn_1", "0R")?.status, "valid");
        let mut filter = CertFilter {
            now: now.into(),
            ..CertFilter::default()
        };
        assert_eq!(
            tx.list_certificates("tn_1", &filter, None, 10)?.items.len(),
            3
        );
        filter.status = Some("revoked".into());
        filter.ca_id = Some("ca_1".into());
        assert_eq!(
            tx.list_certificates("tn_1", &filter, None, 10)?.items.len(),
            2
        );
        filter.status = Some("valid".into());
        filter.expiring_before = Some("2030-01-01T00:00:00Z".into());
        filter.role = None;
        assert_eq!(
            tx.list_certificates("tn_1", &filter, None, 10)?.items.len(),
            1
        );
        // roles
        let mut role = RoleRow {
            tenant_id: "tn_1".into(),
            name: "web".into(),
            ca_id: "ca_1".into(),
            config: "{}".into(),
            created_at: now.into(),
            updated_at: now.into(),
        };
        tx.insert_role(&role)?;
        assert!(matches!(tx.insert_role(&role), Err(Error::Conflict(_))));
        role.config = "{\"a\":1}".into();
        tx.update_role(&role)?;
        assert_eq!(tx.get_role("tn_1", "web")?.config, "{\"a\":1}");
        assert_eq!(tx.list_roles("tn_1", None, 10)?.items.len(), 1);
        tx.delete_role("tn_1", "web")?;
        assert!(matches!(
            tx.delete_role("tn_1", "web"),
            Err(Error::NotFound)
        ));
        // tenant setting
        assert_eq!(tx.tenant_csr_distinct_approver("tn_1")?, None);
        tx.set_tenant_csr_distinct_approver("default", Some(true))?;
        assert_eq!(tx.tenant_csr_distinct_approver("tn_1")?, Some(true));
        // events
        tx.insert_event(
            "tn_1",
            "csr.imported",
            Some("csr_1"),
            "2026-01-01T00:00:00Z",
            "{}",
        )?;
        tx.insert_event("tn_1", "certificate.issued", None, now, "{}")?;
        assert_eq!(tx.list_events("tn_1", None, 10)?.items.len(), 2);
        let only = tx.list_events_filtered("tn_1", None, 10, Some("certificate.*"), None)?;
        assert_eq!(only.items.len(), 1);
        let exact = tx.list_events_filtered("tn_1", None, 10, Some("csr.imported"), None)?;
        assert_eq!(exact.items.len(), 1);
        let since = tx.list_events_filtered("tn_1", None, 10, None, Some(now))?;
        assert_eq!(since.items[0].kind, "certificate.issued");
        // revocation and CRLs
        assert_eq!(tx.certificate_status("ca_1", "0R")?.unwrap().0, "valid");
        assert_eq!(tx.certificate_status("ca_1", "FF")?, None);
        let chunk = tx.revoked_chunk("ca_1", "2000-01-01T00:00:00Z", 0, 1)?;
        assert_eq!(chunk.len(), 1);
        let more = tx.revoked_chunk("ca_1", "2000-01-01T00:00:00Z", chunk[0].0, 10)?;
        assert_eq!(more.len(), 1);
        assert_eq!(tx.cas_needing_crl(now)?, vec!["ca_1".to_owned()]);
        let n = tx.next_crl_number("ca_1")?;
        tx.publish_crl("ca_1", n, now, "2026-06-02T00:00:00Z")?;
        let (num, this, _, dirty) = tx.published_crl("ca_1")?.unwrap();
        assert_eq!((num, this.as_deref(), dirty), (n, Some(now), false));
        assert!(tx.cas_needing_crl(now)?.is_empty());
        assert!(tx.import_crl("ca_1", n + 5, now, "2026-07-01T00:00:00Z")?);
        assert!(!tx.import_crl("ca_1", n + 1, now, "2026-07-01T00:00:00Z")?);
        assert_eq!(
            tx.crl_summary()?,
            (1, 0, Some("2026-07-01T00:00:00Z".into()))
        );
        tx.put_ocsp_signer("ca_1", "ocsp-1", &[9], now)?;
        tx.put_ocsp_signer("ca_1", "ocsp-2", &[9], now)?;
        assert_eq!(tx.ocsp_signer("ca_1")?.unwrap().0, "ocsp-2");
        // shared OCSP responses
        let resp = ocsp_row("ca_1", "0R", "good", now);
        assert!(tx.put_ocsp_response(&resp)?);
        assert_eq!(tx.ocsp_response("ca_1", "0R", &[1, 2])?, Some(resp));
        assert_eq!(tx.ocsp_responses_due("2099-01-01T00:00:00Z", 10)?.len(), 1);
        assert_eq!(tx.delete_ocsp_responses_expired("2099-01-01T00:00:00Z")?, 1);
        assert_eq!(tx.delete_ocsp_responses("ca_1", "0R")?, 0);
        // tidy: revoked certificates are held to their own cutoff (a dry run first)
        let (total, revoked, cas) = tx.tidy_certificates(
            "tn_1",
            "2099-01-01T00:00:00Z",
            "2000-01-01T00:00:00Z",
            false,
        )?;
        assert_eq!((total, revoked, cas.len()), (1, 0, 0));
        let (total, revoked, cas) =
            tx.tidy_certificates("tn_1", "2099-01-01T00:00:00Z", "2099-01-01T00:00:00Z", true)?;
        assert_eq!((total, revoked, cas), (3, 2, vec!["ca_1".to_owned()]));
        assert!(matches!(
            tx.get_certificate("tn_1", "0R"),
            Err(Error::NotFound)
        ));
        Ok(())
    })
    .unwrap();
}

fn r_with(r: &CertRow, serial: &str) -> CertRow {
    CertRow {
        serial: serial.into(),
        ..r.clone()
    }
}

fn acme_methods_run(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    let now = "2026-06-01T00:00:00Z";
    f.store
        .write(|tx| {
            let acct = AcmeAccountRow {
                id: "acme_1".into(),
                tenant_id: "tn_1".into(),
                name: "le".into(),
                provider: "letsencrypt".into(),
                environment: "staging".into(),
                directory_url: "https://x/dir".into(),
                email: None,
                directory_ca_pem: None,
                account_url: "https://x/acct/1".into(),
                eab_kid: None,
                status: "valid".into(),
                creds_wrapped: vec![1],
                creds_sealed: vec![2],
                created_at: now.into(),
                deactivated_at: None,
            };
            tx.insert_acme_account(&acct)?;
            assert!(matches!(
                tx.insert_acme_account(&acct),
                Err(Error::Conflict(_))
            ));
            assert!(tx.acme_account_name_taken("tn_1", "le")?);
            assert_eq!(tx.get_acme_account("tn_1", "acme_1")?.creds_sealed, vec![2]);
            assert_eq!(tx.list_acme_accounts("tn_1", None, 10)?.items.len(), 1);
            let dns = DnsProviderRow {
                id: "dns_1".into(),
                tenant_id: "tn_1".into(),
                name: "d".into(),
                kind: "rfc2136".into(),
                config: "{}".into(),
                secrets_wrapped: vec![3],
                secrets_sealed: vec![4],
                created_at: now.into(),
            };
            tx.insert_dns_provider(&dns)?;
            assert_eq!(tx.get_dns_provider("tn_1", "dns_1")?.kind, "rfc2136");
            assert_eq!(tx.list_dns_providers("tn_1", None, 10)?.items.len(), 1);
            let mut mc = ManagedCertRow {
                id: "mc_1".into(),
                tenant_id: "tn_1".into(),
                account_id: "acme_1".into(),
                domains: "[\"a.example\"]".into(),
                challenge_type: "dns-01".into(),
                dns_provider_id: Some("dns_1".into()),
                key_type: "ec256".into(),
                profile: None,
                auto_renew: true,
                status: "pending".into(),
                version: 0,
                last_error: None,
                order_kind: None,
                order_url: None,
                order_started_at: None,
                order_attempts: 0,
                renew_at: None,
                renew_failures: 0,
                created_at: now.into(),
                updated_at: now.into(),
            };
            tx.insert_managed_cert(&mc)?;
            assert!(matches!(
                tx.delete_dns_provider("tn_1", "dns_1"),
                Err(Error::Conflict(_))
            ));
            assert!(tx.claim_managed_order("mc_1", "issue", now)?);
            assert!(!tx.claim_managed_order("mc_1", "issue", now)?);
            assert_eq!(tx.managed_certs_in_flight()?, vec!["mc_1".to_owned()]);
            tx.insert_managed_version(&ManagedVersionRow {
                mc_id: "mc_1".into(),
                version: 1,
                serial_number: "01".into(),
                certificate: "PEM".into(),
                ca_chain: "CHAIN".into(),
                not_before: now.into(),
                not_after: "2026-06-10T00:00:00Z".into(),
                key_wrapped: vec![5],
                key_sealed: vec![6],
                created_at: now.into(),
            })?;
            mc.status = "valid".into();
            mc.version = 1;
            mc.renew_at = Some("2026-06-05T00:00:00Z".into());
            tx.update_managed_cert(&mc)?;
            assert!(tx.managed_certs_in_flight()?.is_empty());
            let got = tx.get_managed_cert("tn_1", "mc_1")?;
            assert_eq!(got, tx.get_managed_cert_any_tenant("mc_1")?);
            assert!(got.auto_renew);
            assert_eq!(tx.list_managed_certs("tn_1", None, 10)?.items.len(), 1);
            assert_eq!(
                tx.managed_certs_due("2026-06-06T00:00:00Z")?,
                vec!["mc_1".to_owned()]
            );
            assert_eq!(tx.managed_certs_expiring("2026-06-20T00:00:00Z")?.len(), 1);
            tx.mark_managed_cert_expiring("mc_1", 1)?;
            assert!(tx
                .managed_certs_expiring("2026-06-20T00:00:00Z")?
                .is_empty());
            assert_eq!(tx.managed_certs_ari_due(now)?.len(), 1);
            tx.set_managed_cert_ari("mc_1", 1, "2026-06-03T00:00:00Z", None)?;
            assert!(tx.managed_certs_ari_due(now)?.is_empty());
            assert_eq!(tx.get_managed_version("mc_1", 1)?.key_sealed, vec![6]);
            assert_eq!(tx.list_managed_versions("mc_1")?.len(), 1);
            assert_eq!(tx.challenge_answer("http-01", "tok")?, None);
            tx.put_challenge_answer("http-01", "tok", "tok.thumb", "2026-06-01T00:00:00Z")?;
            tx.put_challenge_answer("http-01", "tok", "tok.thumb2", "2026-06-01T00:00:00Z")?;
            tx.put_challenge_answer("tls-alpn-01", "a.example", "ab12", "2026-06-02T00:00:00Z")?;
            assert_eq!(
                tx.challenge_answer("http-01", "tok")?.as_deref(),
                Some("tok.thumb2")
            );
            assert_eq!(tx.challenge_answer("tls-alpn-01", "tok")?, None);
            tx.delete_challenge_answer("http-01", "tok")?;
            tx.delete_challenge_answer("http-01", "tok")?;
            assert_eq!(tx.challenge_answer("http-01", "tok")?, None);
            tx.put_challenge_answer("http-01", "old", "old.thumb", "2026-05-01T00:00:00Z")?;
            assert_eq!(
                tx.delete_challenge_answers_before("2026-06-01T00:00:00Z")?,
                1
            );
            assert_eq!(tx.challenge_answer("http-01", "old")?, None);
            assert_eq!(
                tx.challenge_answer("tls-alpn-01", "a.example")?.as_deref(),
                Some("ab12")
            );
            let rec = |id: &str, mc: &str, at: &str| crate::DnsRecordRow {
                id: id.into(),
                managed_cert_id: mc.into(),
                dns_provider_id: "dns_1".into(),
                fqdn: "_acme-challenge.a.example".into(),
                value: format!("v-{id}"),
                created_at: at.into(),
            };
            assert!(tx.dns_records_of("mc_1")?.is_empty());
            tx.insert_dns_record(&rec("dnsrec_2", "mc_1", "2026-06-02T00:00:00Z"))?;
            tx.insert_dns_record(&rec("dnsrec_1", "mc_1", "2026-06-01T00:00:00Z"))?;
            tx.insert_dns_record(&rec("dnsrec_3", "mc_2", "2026-06-01T00:00:00Z"))?;
            let of_1 = tx.dns_records_of("mc_1")?;
            assert_eq!(
                of_1,
                vec![
                    rec("dnsrec_1", "mc_1", "2026-06-01T00:00:00Z"),
                    rec("dnsrec_2", "mc_1", "2026-06-02T00:00:00Z")
                ]
            );
            tx.delete_dns_record("dnsrec_1")?;
            tx.delete_dns_record("dnsrec_1")?;
            assert_eq!(tx.dns_records_of("mc_1")?.len(), 1);
            assert_eq!(tx.dns_records_of("mc_2")?.len(), 1);
            tx.deactivate_acme_account("tn_1", "acme_1", now)?;
            assert_eq!(tx.get_acme_account("tn_1", "acme_1")?.status, "deactivated");
            Ok(())
        })
        .unwrap();
    // A managed certificate is deleted with its versions and record notes, not while an order
    // of it is in flight; its DNS provider is then free to go.
    f.store
        .write(|tx| {
            assert_eq!(
                tx.managed_cert_of_serial("tn_1", "01")?,
                Some("mc_1".into())
            );
            assert_eq!(tx.managed_cert_of_serial("tn_2", "01")?, None);
            assert!(tx.claim_managed_order("mc_1", "renew", "2026-06-03T00:00:00Z")?);
            assert!(matches!(
                tx.delete_managed_cert("tn_1", "mc_1"),
                Err(Error::Conflict(_))
            ));
            Ok(())
        })
        .unwrap();
    f.store
        .write(|tx| {
            let mut mc = tx.get_managed_cert("tn_1", "mc_1")?;
            mc.order_kind = None;
            tx.update_managed_cert(&mc)?;
            assert!(matches!(
                tx.delete_managed_cert("tn_2", "mc_1"),
                Err(Error::NotFound)
            ));
            tx.delete_managed_cert("tn_1", "mc_1")?;
            assert!(matches!(
                tx.get_managed_cert("tn_1", "mc_1"),
                Err(Error::NotFound)
            ));
            assert!(tx.list_managed_versions("mc_1")?.is_empty());
            assert!(tx.dns_records_of("mc_1")?.is_empty());
            assert_eq!(tx.managed_cert_of_serial("tn_1", "01")?, None);
            tx.delete_dns_provider("tn_1", "dns_1")
        })
        .unwrap();
    // A second deactivation (two DELETEs at once, each having read the account valid) is a
    // conflict, not a second success; an unknown account stays not found.
    assert!(matches!(
        f.store
            .write(|tx| tx.deactivate_acme_account("tn_1", "acme_1", "2026-06-03T00:00:00Z")),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        f.store
            .write(|tx| tx.deactivate_acme_account("tn_1", "acme_none", "2026-06-03T00:00:00Z")),
        Err(Error::NotFound)
    ));
    // Only the two kinds the responders serve (a failed statement ends a PostgreSQL
    // transaction, hence a write of its own).
    assert!(f
        .store
        .write(|tx| tx.put_challenge_answer("dns-01", "x", "y", "2026-06-01T00:00:00Z"))
        .is_err());
}

/// The checkpointer copies committed WAL frames back into the database file shortly after the
/// writer's commits, without a checkpoint inside any commit: a copy of the main file alone (no
/// `-wal`) soon holds every batched write. (The writer's own safety net starts at 10 000 pages;
/// these few hundred pages stay far below it.)
#[test]
fn batched_writes_reach_the_database_file_without_the_writer_checkpointing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let s = Store::open(&path).unwrap();
    s.write(|tx| tx.insert_tenant(&tenant("tn_1"))).unwrap();
    for i in 0..200 {
        s.write_batched(Box::new(move |tx| {
            tx.append_audit(&rec(&format!("b{i}"))).map(|_| ())
        }))
        .unwrap();
    }
    let copy = dir.path().join("copy.sqlite");
    let in_file = || -> Option<i64> {
        std::fs::copy(&path, &copy).ok()?;
        let c = rusqlite::Connection::open(&copy).ok()?;
        c.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
            .ok()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = in_file();
    while seen != Some(200) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        seen = in_file();
    }
    assert_eq!(seen, Some(200), "audit rows in the database file alone");
    // Still one consistent database with its WAL.
    assert_eq!(s.read(|tx| tx.verify_audit()).unwrap().first_bad, None);
}

both_backends!(issue_basis_detects_each_change);

/// `check_issue_basis` passes while token, role and CA are as read, and names the first that
/// changed: a revoked token, a role with other settings or another CA, a CA retired, re-keyed
/// (other certificate serial) or taken offline (other key label), a deleted role.
fn issue_basis_detects_each_change(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    let s = &f.store;
    let now = "2026-06-01T00:00:00Z";
    let mut c = ca("ca_1");
    c.serial = Some("0A".into());
    let role = RoleRow {
        tenant_id: "tn_1".into(),
        name: "web".into(),
        ca_id: "ca_1".into(),
        config: "{\"ttl\":\"1h\"}".into(),
        created_at: now.into(),
        updated_at: now.into(),
    };
    s.write(|tx| {
        for id in ["tok_a", "tok_b"] {
            tx.insert_token(
                &TokenRow {
                    id: id.into(),
                    tenant_id: "tn_1".into(),
                    name: None,
                    policies: vec!["issuer:web".into()],
                    created_at: now.into(),
                    expires_at: None,
                    revoked_at: None,
                },
                id.as_bytes(),
            )?;
        }
        tx.insert_ca(&c)?;
        tx.update_ca(&c)?;
        let mut other = ca("ca_2");
        other.serial = Some("0B".into());
        tx.insert_ca(&other)?;
        tx.update_ca(&other)?;
        tx.insert_role(&role)
    })
    .unwrap();
    let basis = IssueBasis {
        token_id: "tok_a".into(),
        tenant_id: "tn_1".into(),
        role: "web".into(),
        ca_id: "ca_1".into(),
        role_config: role.config.clone(),
        ca_serial: "0A".into(),
        ca_key_label: c.key_label.clone(),
    };
    let check = |b: &IssueBasis| s.write(|tx| tx.check_issue_basis(b));
    let changed = |b: &IssueBasis| match check(b) {
        Err(Error::Changed(what)) => what,
        other => panic!("expected Changed, got {other:?}"),
    };
    check(&basis).unwrap();

    // What the caller read differs from the database: each field on its own.
    let mut b = basis.clone();
    b.tenant_id = "tn_2".into();
    assert_eq!(changed(&b), "token");
    let mut b = basis.clone();
    b.role_config = "{\"ttl\":\"2h\"}".into();
    assert_eq!(changed(&b), "role");
    let mut b = basis.clone();
    b.ca_id = "ca_2".into();
    b.ca_serial = "0B".into();
    assert_eq!(changed(&b), "role");
    let mut b = basis.clone();
    b.ca_serial = "0C".into();
    assert_eq!(changed(&b), "ca");
    let mut b = basis.clone();
    b.ca_key_label = "offline-x".into();
    assert_eq!(changed(&b), "ca");

    // The database changes under an unchanged basis.
    s.write(|tx| {
        let mut r = role.clone();
        r.config = "{\"ttl\":\"3h\"}".into();
        tx.update_role(&r)
    })
    .unwrap();
    assert_eq!(changed(&basis), "role");
    s.write(|tx| tx.update_role(&role)).unwrap();
    check(&basis).unwrap();
    let mut retired = c.clone();
    retired.status = "retired".into();
    s.write(|tx| tx.update_ca(&retired)).unwrap();
    assert_eq!(changed(&basis), "ca");
    s.write(|tx| tx.update_ca(&c)).unwrap();
    check(&basis).unwrap();
    s.write(|tx| tx.revoke_token("tok_a", None, now)).unwrap();
    assert_eq!(changed(&basis), "token");
    let mut b = basis.clone();
    b.token_id = "tok_b".into();
    check(&b).unwrap();
    s.write(|tx| tx.delete_role("tn_1", "web")).unwrap();
    assert_eq!(changed(&b), "role");
}

both_backends!(certificate_by_serial_is_the_tenants_own);

/// `get_certificate` finds a serial under any of the tenant's CAs, never another tenant's
/// certificate with the same serial nor a bare reservation.
fn certificate_by_serial_is_the_tenants_own(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    let s = &f.store;
    s.write(|tx| {
        tx.insert_tenant(&TenantRow {
            id: "tn_2".into(),
            name: "other".into(),
            created_at: "x".into(),
        })?;
        tx.insert_ca(&ca("ca_1"))?;
        tx.insert_ca(&ca("ca_2"))?;
        let mut theirs = ca("ca_9");
        theirs.tenant_id = "tn_2".into();
        tx.insert_ca(&theirs)?;
        tx.insert_certificate(&cert("ca_2", "0A"))?;
        let mut c = cert("ca_9", "0B");
        c.tenant_id = "tn_2".into();
        tx.insert_certificate(&c)?;
        let mut reserved = cert("ca_1", "0C");
        reserved.status = "reserved".into();
        reserved.cert_der = None;
        tx.reserve_certificate(&reserved, &[1], None)
    })
    .unwrap();
    s.read(|tx| {
        assert_eq!(tx.get_certificate("tn_1", "0A")?.issuer_ca_id, "ca_2");
        assert_eq!(tx.get_certificate("tn_2", "0B")?.issuer_ca_id, "ca_9");
        assert!(matches!(
            tx.get_certificate("tn_1", "0B"),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            tx.get_certificate("tn_2", "0A"),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            tx.get_certificate("tn_1", "0C"),
            Err(Error::NotFound)
        ));
        Ok(())
    })
    .unwrap();
    if kind == Kind::Sqlite {
        // One primary-key probe per CA, not a walk over the tenant's certificates.
        let conn = rusqlite::Connection::open(f.sqlite_path()).unwrap();
        let mut st = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                crate::tx::get_certificate_sql()
            ))
            .unwrap();
        let plan: Vec<String> = st
            .query_map(["tn_1", "0A"], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter()
                .any(|l| l.contains("SEARCH c USING INDEX sqlite_autoindex_certificates_1 (issuer_ca_id=? AND serial=?)")),
            "{plan:?}"
        );
    }
}

/// The files of this process whose names are SQLite temporary files (`etilqs_…`; opened and
/// unlinked at once, so they show as `(deleted)`).
fn open_sqlite_temp_files() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.contains("etilqs_"))
        .collect()
}

/// A group-commit job runs under a savepoint whose statement journal SQLite would spill to a
/// temporary file past 64 KiB; the batch connection keeps it in memory (`temp_store=MEMORY`), so a
/// job that changes ~200 existing pages opens no file.
#[test]
fn a_large_batched_job_keeps_its_statement_journal_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("db.sqlite")).unwrap();
    s.write(|tx| {
        tx.insert_tenant(&tenant("tn_1"))?;
        tx.insert_ca(&ca("ca1"))?;
        for i in 0..400 {
            let mut c = cert("ca1", &format!("{i:04X}"));
            c.cert_der = Some(vec![7; 2048]);
            tx.insert_certificate(&c)?;
        }
        Ok(())
    })
    .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let during = seen.clone();
    s.write_batched(Box::new(move |tx| {
        for i in 0..400 {
            tx.revoke_certificate(
                "tn_1",
                &format!("{i:04X}"),
                "2026-06-01T00:00:00Z",
                "superseded",
            )?;
        }
        *during.lock().unwrap() = Some(open_sqlite_temp_files());
        Ok(())
    }))
    .unwrap();
    assert_eq!(seen.lock().unwrap().take(), Some(Vec::<String>::new()));
    let revoked = s
        .read(|tx| tx.get_certificate("tn_1", "018F"))
        .unwrap()
        .status;
    assert_eq!(revoked, "revoked");
}

#[test]
fn under_a_steady_stream_of_commits_the_wal_starts_over_instead_of_growing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let s = Store::open(&db).unwrap();
    s.write(|tx| {
        tx.insert_tenant(&tenant("tn_1"))?;
        tx.insert_ca(&ca("ca1"))
    })
    .unwrap();
    // 3 s of one commit after another, with no pause in which a checkpoint beside the writer
    // could catch up. Each commit (a row with a 2 KiB DER and its index entries) appends several
    // 4 KiB pages to the WAL: ~700 to 2 400 commits a second on the 2-core machines this runs on,
    // so a WAL that never started over would reach tens of MB (41 MB in 1.5 s before the writer
    // finished the checkpoint rounds); one that does holds about one round's commits (~50 ms).
    let wal = dir.path().join("db.sqlite-wal");
    let (mut largest, mut i) = (0u64, 0u32);
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(3) {
        let mut c = cert("ca1", &format!("{i:08X}"));
        c.cert_der = Some(vec![7; 2048]);
        s.write_batched(Box::new(move |tx| tx.insert_certificate(&c)))
            .unwrap();
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        i += 1;
    }
    eprintln!("largest WAL {largest} bytes in {i} commits");
    assert!(i > 500, "only {i} commits in 3 s");
    assert!(
        largest < 8 << 20,
        "the WAL grew to {largest} bytes in {i} commits"
    );
    // Nothing was lost on the way: the first and the last certificate are there.
    for serial in [0, i - 1] {
        let row = s
            .read(|tx| tx.get_certificate("tn_1", &format!("{serial:08X}")))
            .unwrap();
        assert_eq!(row.cert_der.as_deref(), Some(&[7u8; 2048][..]));
    }
}

/// A port that accepts connections and never answers (a stopped server, a proxy whose far leg
/// hangs): opening the store gives up within the URL's `connect_timeout` with a message, instead
/// of waiting forever for the server's first byte.
#[test]
fn a_server_that_never_answers_is_given_up_within_the_connect_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        // Accepts and keeps the connections open, saying nothing.
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept() {
            open.push(s);
            if open.len() == 2 {
                std::thread::sleep(Duration::from_secs(10));
                return;
            }
        }
    });
    for url in [
        format!("postgres://sv:pw@127.0.0.1:{port}/db?connect_timeout=1"),
        format!("host=127.0.0.1 port={port} user=sv password=pw dbname=db connect_timeout=1"),
    ] {
        let started = std::time::Instant::now();
        let Err(err) = Store::open_postgres(&PgConfig {
            url,
            pool_size: 1,
            ca_file: None,
            call_limit: None,
        }) else {
            panic!("a server that never answers was taken for a database");
        };
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "gave up after {took:?}");
        assert!(took >= Duration::from_millis(900), "gave up after {took:?}");
        match &err {
            Error::Unavailable(m) => {
                assert!(m.contains("did not answer within 1 s"), "{m}");
                assert!(!m.contains("pw"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
    drop(held);
}

/// A TCP relay to the test database that can stop passing bytes on (the server or the path to
/// it hangs while its kernel still acknowledges).
struct Relay {
    port: u16,
    frozen: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn to(target: std::net::SocketAddr) -> Relay {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = frozen.clone();
        std::thread::spawn(move || {
            while let Ok((a, _)) = listener.accept() {
                let Ok(b) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)]
                {
                    let f = f.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            // Connections made while frozen stay frozen.
                            while f.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, frozen }
    }
}

/// A database that stops answering in the middle of a session: the store's call gives up after
/// its call limit with a 503-kind error instead of holding the caller forever, and once the path
/// answers again the next call works on a new connection.
#[test]
fn a_database_that_stops_answering_mid_session_is_given_up_after_the_call_limit() {
    use std::sync::atomic::Ordering;
    let Some(f) = store_with(Kind::Postgres, 0) else {
        return;
    };
    let direct = f.pg.as_ref().unwrap().config();
    let target: std::net::SocketAddr = {
        let rest = direct.url.split_once('@').unwrap().1;
        let hostport = rest.split('/').next().unwrap();
        std::net::ToSocketAddrs::to_socket_addrs(hostport)
            .unwrap()
            .next()
            .unwrap()
    };
    let relay = Relay::to(target);
    let hostport = direct
        .url
        .split_once('@')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap();
    let url = direct.url.replacen(
        &format!("@{hostport}/"),
        &format!("@127.0.0.1:{}/", relay.port),
        1,
    );
    assert!(!url.contains('?'), "{url}");
    let via = PgConfig {
        url: format!("{url}?connect_timeout=2"),
        pool_size: 1,
        ca_file: None,
        call_limit: Some(Duration::from_secs(2)),
    };
    let s = Store::open_postgres(&via).unwrap();
    s.write(|tx| tx.append_audit(&rec("before")).map(|_| ()))
        .unwrap();
    s.lookup(|tx| tx.ping()).unwrap();

    relay.frozen.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let err = s.lookup(|tx| tx.ping()).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, Error::Unavailable(m) if m.contains("did not answer")),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(8), "gave up after {took:?}");
    // For a few seconds after that, calls are refused at once instead of each waiting for the
    // database (and queueing behind one another) again.
    let started = std::time::Instant::now();
    let err = s
        .write(|tx| tx.append_audit(&rec("while frozen")).map(|_| ()))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable(m) if m.contains("not asked again yet")),
        "{err:?}"
    );
    let err = s.lookup(|tx| tx.ping()).unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable(m) if m.contains("not asked again yet")),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    relay.frozen.store(false, Ordering::SeqCst);
    let mut ok = false;
    for _ in 0..80 {
        if s.lookup(|tx| tx.ping()).is_ok()
            && s.write(|tx| tx.append_audit(&rec("after")).map(|_| ()))
                .is_ok()
        {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        ok,
        "the store did not recover once the database answered again"
    );
    drop(s);
    drop(relay);
}

/// A write whose wait for the cluster-wide write lock fails (here cancelled; in production
/// `lock_timeout` behind a node stopped mid-transaction) leaves its connection usable: the
/// transaction `BEGIN` opened is rolled back, instead of every later write on that connection
/// failing with 25P02 ("current transaction is aborted") until a restart.
#[test]
fn a_failed_wait_for_the_write_lock_leaves_the_connection_usable() {
    let Some(f) = store_with(Kind::Postgres, 0) else {
        return;
    };
    let db = f.pg.as_ref().unwrap();
    let s = &f.store;
    s.write(|tx| tx.append_audit(&rec("before")).map(|_| ()))
        .unwrap();
    // Another session holds the write lock.
    let mut holder = db.client();
    let mut hold = holder.transaction().unwrap();
    hold.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&crate::pg::WRITE_LOCK],
    )
    .unwrap();
    let waiting = std::thread::scope(|scope| {
        let writer = scope.spawn(|| s.write(|tx| tx.append_audit(&rec("blocked")).map(|_| ())));
        // Cancel the store's wait once it waits.
        let mut admin = db.client();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let n: i64 = admin
                .query_one(
                    "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity \
                     WHERE wait_event_type = 'Lock' AND datname = current_database() \
                     AND pid <> pg_backend_pid()",
                    &[],
                )
                .unwrap()
                .get(0);
            if n > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the write never waited"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        writer.join().unwrap()
    });
    assert!(waiting.is_err(), "the cancelled write reported success");
    hold.rollback().unwrap();
    for i in 0..3 {
        s.write(|tx| tx.append_audit(&rec("after")).map(|_| ()))
            .unwrap_or_else(|e| panic!("write {i} after the failed wait: {e}"));
    }
}

/// A refused connection says why (the driver's own text is only "db error"): a wrong password,
/// a database that does not exist — and never echoes the password.
#[test]
fn a_refused_connection_says_why() {
    let Some(f) = store_with(Kind::Postgres, 0) else {
        return;
    };
    let url = f.pg.as_ref().unwrap().config().url;
    let (userinfo, rest) = url.split_once('@').unwrap();
    let user = userinfo.rsplit_once(':').map_or(userinfo, |(u, _)| u);
    let open = |url: String| match Store::open_postgres(&PgConfig {
        url,
        pool_size: 1,
        ca_file: None,
        call_limit: None,
    }) {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    };
    let wrong = open(format!("{user}:Wrong-Pw-77@{rest}"));
    if !wrong.contains("password authentication failed") {
        // The server trusts local connections: no password is asked for.
        eprintln!("the server did not ask for a password: {wrong}");
    } else {
        assert!(!wrong.contains("Wrong-Pw-77"), "{wrong}");
    }
    let base = url.rsplit_once('/').unwrap().0;
    let missing = open(format!("{base}/sv_no_such_database"));
    assert!(
        missing.contains("sv_no_such_database") && missing.contains("does not exist"),
        "{missing}"
    );
}

both_backends!(an_unconfirmed_commit_is_settled);

/// `settle_unconfirmed`: a reservation left is deleted, a certificate found stored `valid` is
/// revoked (`cessation_of_operation`, CRL marked dirty), anything else is left as it is.
fn an_unconfirmed_commit_is_settled(kind: Kind) {
    let Some(f) = store_with(kind, 0) else {
        return;
    };
    let at = "2026-06-01T00:00:00Z";
    f.store
        .write(|tx| {
            tx.insert_ca(&ca("ca_1"))?;
            let mut reserved = cert("ca_1", "0A");
            reserved.status = "reserved".into();
            reserved.cert_der = None;
            tx.reserve_certificate(&reserved, &[1], None)?;
            tx.insert_certificate(&cert("ca_1", "0B"))?;
            let mut revoked = cert("ca_1", "0C");
            revoked.status = "revoked".into();
            revoked.revocation_reason = Some("key_compromise".into());
            tx.insert_certificate(&revoked)?;
            // A CSR the unconfirmed commit of 0B marked signed.
            tx.insert_csr(&CsrRow {
                id: "csr_1".into(),
                tenant_id: "tn_1".into(),
                status: "signing".into(),
                csr_der: vec![1],
                summary: "{}".into(),
                note: None,
                requested_by: "tok_1".into(),
                created_at: "x".into(),
                decided_by: Some("tok_2".into()),
                decided_at: Some("x".into()),
                comment: None,
                reason: None,
                signed_ca_id: None,
                signed_serial: None,
                signed_at: None,
            })?;
            tx.finish_csr("tn_1", "csr_1", "ca_1", "0B", "x")
        })
        .unwrap();
    let dirty = |f: &Fixture| {
        f.store
            .read(|tx| tx.published_crl("ca_1"))
            .unwrap()
            .is_some_and(|c| c.3)
    };
    assert!(!dirty(&f));
    let settled = f
        .store
        .write(|tx| {
            Ok([
                tx.settle_unconfirmed("ca_1", "0A", at)?,
                tx.settle_unconfirmed("ca_1", "0B", at)?,
                tx.settle_unconfirmed("ca_1", "0B", at)?,
                tx.settle_unconfirmed("ca_1", "0C", at)?,
                tx.settle_unconfirmed("ca_1", "0D", at)?,
            ])
        })
        .unwrap();
    use crate::Settled::{AlreadyRevoked, NotStored, Revoked};
    assert_eq!(
        settled,
        [
            NotStored,
            Revoked,
            AlreadyRevoked,
            AlreadyRevoked,
            NotStored
        ]
    );
    assert!(dirty(&f));
    f.store
        .read(|tx| {
            assert_eq!(tx.certificate_status("ca_1", "0A")?, None);
            assert!(matches!(
                tx.get_certificate("tn_1", "0A"),
                Err(Error::NotFound)
            ));
            let b = tx.certificate_status("ca_1", "0B")?.unwrap();
            assert_eq!(
                (b.0.as_str(), b.1.as_deref(), b.2.as_deref()),
                ("revoked", Some(at), Some("cessation_of_operation"))
            );
            let c = tx.certificate_status("ca_1", "0C")?.unwrap();
            assert_eq!(c.2.as_deref(), Some("key_compromise"));
            // The CSR can be signed again.
            let csr = tx.get_csr("tn_1", "csr_1")?;
            assert_eq!(
                (csr.status.as_str(), csr.signed_serial, csr.signed_ca_id),
                ("approved", None, None)
            );
            Ok(())
        })
        .unwrap();
}

/// A node that starts while another migrates the schema waits for it (the migration lock is
/// waited for a minute, not the 15 s `lock_timeout` of a row: a node then exited at start), and
/// opens the store once that migration ends.
#[test]
fn a_store_opening_during_another_nodes_migration_waits_for_it() {
    let Some(f) = fixture(Kind::Postgres) else {
        return;
    };
    let pg = f.pg.as_ref().unwrap();
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let mut other = pg.client();
    let holder = std::thread::spawn(move || {
        let mut tx = other.transaction().unwrap();
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&crate::pg::MIGRATE_LOCK],
        )
        .unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(20));
        tx.commit().unwrap();
    });
    locked.recv().unwrap();
    let t0 = std::time::Instant::now();
    let opened = Store::open_postgres(&pg.config());
    let took = t0.elapsed();
    holder.join().unwrap();
    let store = opened.unwrap();
    assert!(took >= Duration::from_secs(19), "{took:?}");
    store.ping().unwrap();
}
