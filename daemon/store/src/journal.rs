//! The reservation journal of the SQLite store: where an issuance records its serial, its
//! to-be-signed certificate and a `started` audit record before the token signs (the record
//! joins the audit chain only if a crash leaves the issuance unfinished: the call's own record is
//! the certificate commit's `success`, API.md asking for one record per call).
//!
//! Before it, every issuance wrote that reservation as a transaction of its own through the group
//! commit — a hand-off to the writer thread and back before the signature, and an `INSERT` later
//! turned into an `UPDATE`. The journal is a plain append-only file written by the request's own
//! thread: one `write` of whole 4 KiB pages (no `fsync`), so it survives a crash of the process like
//! the WAL frames it replaces (`Durability::Wal`), and the certificate's own durable commit, with
//! its audit record, follows before anyone sees the certificate. Measured in docs/PERFORMANCE.md.
//!
//! **Fail-closed.** Every record starts on a fresh page of its segment file, so each append needs
//! new space on the filesystem: on a full filesystem the `write` fails (`ENOSPC`), the issuance
//! answers `503 audit_unavailable` and the token signs nothing, as when the reservation was a
//! database write. A failed append retires the segment (later appends start a new file), so a
//! torn record never shifts the ones after it.
//!
//! **Lifetime.** Records go to segment files named `<run>-<n>.journal` in `<database>-reservations/`;
//! a segment takes [`SEGMENT_RECORDS`] records, and it is deleted (by a sweeper thread, off the
//! store writer's path) once it is full and each of its records was resolved —
//! [`Journal::resolve`] after the certificate's durable commit, or [`Journal::release`] after a
//! failed signature's commit (which also appends a tombstone). At
//! start, before any request, [`Journal::pending`] returns every record of the segments left by
//! earlier runs that no tombstone cancels; the daemon stores those that the database does not
//! know as reservations (unless their certificate has expired: then only their audit trace is
//! appended), revokes them with the other unfinished ones, and then calls
//! [`Journal::forget`] to delete those segments. A clean stop deletes the settled segments
//! ([`Journal::close_resolved`]), and a tidy starts a new one ([`Journal::rotate`]).
//!
//! Record layout (little-endian): `SVRJ`, kind (1 reservation, 2 tombstone), three zero octets,
//! payload length (u32), the first 8 octets of SHA-256(payload), the payload (JSON), zeros up to
//! the next 4 KiB boundary. A record whose length or checksum does not match is skipped (a torn
//! write), with a warning.

use crate::{AuditRecord, CertRow, Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, OnceLock};

/// Every record starts on a boundary of this many octets.
pub const PAGE: usize = 4096;
/// Records per segment file.
pub const SEGMENT_RECORDS: usize = 1024;

const MAGIC: &[u8; 4] = b"SVRJ";
const HEADER: usize = 20;
const KIND_RESERVATION: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
const SUFFIX: &str = ".journal";

/// What an issuance records before the token signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The certificate's row as it will be stored (status `reserved` until then).
    pub row: CertRow,
    /// The to-be-signed certificate, DER.
    #[serde(with = "hex::serde")]
    pub tbs_der: Vec<u8>,
    /// The `started` audit record, appended to the chain by the reconciliation at start if the
    /// issuance never finished.
    pub started: AuditRecord,
}

/// A tombstone: the reservation of `serial` under `issuer_ca_id` was released (never signed).
#[derive(Debug, Serialize, Deserialize)]
struct Tombstone {
    issuer_ca_id: String,
    serial: String,
}

/// A written record, to be resolved once the database holds its outcome.
#[derive(Debug)]
#[must_use = "an unresolved ticket keeps its segment until the next start"]
pub struct Ticket {
    segment: u64,
}

struct Segment {
    id: u64,
    file: File,
    records: usize,
}

#[derive(Default)]
struct Inner {
    current: Option<Segment>,
    next: u64,
    /// Unresolved records per segment of this run, and whether the segment takes no more.
    open: HashMap<u64, (usize, bool)>,
}

/// The reservation journal (see the module documentation).
pub struct Journal {
    dir: PathBuf,
    run: String,
    inner: Mutex<Inner>,
    /// Deletes finished segments off the caller's thread (started on first use; `None` when it
    /// could not be started, then the caller deletes).
    sweeper: OnceLock<Option<mpsc::Sender<PathBuf>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io(what: &str, path: &Path, e: &std::io::Error) -> Error {
    Error::Unavailable(format!(
        "reservation journal: {what} {}: {e}",
        path.display()
    ))
}

/// `record` framed and padded to whole pages.
fn frame(kind: u8, payload: &[u8]) -> Result<Vec<u8>> {
    let len =
        u32::try_from(payload.len()).map_err(|_| Error::Sql("journal record over 4 GiB".into()))?;
    let total = (HEADER + payload.len()).div_ceil(PAGE) * PAGE;
    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&[kind, 0, 0, 0]);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&Sha256::digest(payload)[..8]);
    buf.extend_from_slice(payload);
    buf.resize(total, 0);
    Ok(buf)
}

/// The records of one segment's bytes: `(kind, payload)`, torn ones left out (counted in the
/// second value).
fn records(bytes: &[u8]) -> (Vec<(u8, &[u8])>, usize) {
    let mut out = Vec::new();
    let mut torn = 0;
    let mut at = 0;
    while at < bytes.len() {
        let rest = bytes.get(at..).unwrap_or_default();
        let next = at + PAGE;
        let Some(head) = rest.get(..HEADER) else {
            if rest.iter().any(|b| *b != 0) {
                torn += 1;
            }
            break;
        };
        if head.get(..4) != Some(MAGIC.as_slice()) {
            if rest.iter().take(PAGE).any(|b| *b != 0) {
                torn += 1;
            }
            at = next;
            continue;
        }
        let kind = head.get(4).copied().unwrap_or_default();
        let len = head
            .get(8..12)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, u32::from_le_bytes) as usize;
        let payload = rest.get(HEADER..HEADER + len);
        match payload {
            Some(p) if head.get(12..20) == Some(&Sha256::digest(p)[..8]) => {
                out.push((kind, p));
                at += (HEADER + len).div_ceil(PAGE) * PAGE;
            }
            _ => {
                torn += 1;
                at = next;
            }
        }
    }
    (out, torn)
}

fn delete_segment(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot delete a finished reservation journal segment");
    }
}

impl Journal {
    /// The journal of the database at `db` (directory `<db>-reservations`, created on the first
    /// append). Opening reads and writes nothing.
    pub fn new(db: &Path) -> Self {
        let mut dir = db.as_os_str().to_owned();
        dir.push("-reservations");
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Journal {
            dir: PathBuf::from(dir),
            run: format!("{run:032}-{}", std::process::id()),
            inner: Mutex::new(Inner::default()),
            sweeper: OnceLock::new(),
        }
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| Error::Unavailable("reservation journal lock poisoned".into()))
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{}-{id:08}{SUFFIX}", self.run))
    }

    /// Appends `bytes` (whole pages) to the current segment, opening one if needed. Returns the
    /// segment's id.
    fn append(&self, inner: &mut Inner, bytes: &[u8]) -> Result<u64> {
        if inner.current.is_none() {
            let id = inner.next;
            inner.next += 1;
            let path = self.segment_path(id);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        std::fs::create_dir_all(&self.dir)
                            .map_err(|e| io("creating", &self.dir, &e))?;
                        OpenOptions::new()
                            .create_new(true)
                            .append(true)
                            .open(&path)
                            .map_err(|e| io("creating", &path, &e))
                    } else {
                        Err(io("creating", &path, &e))
                    }
                })?;
            inner.open.insert(id, (0, false));
            inner.current = Some(Segment {
                id,
                file,
                records: 0,
            });
        }
        let Some(seg) = inner.current.as_mut() else {
            return Err(Error::Unavailable("reservation journal: no segment".into()));
        };
        let id = seg.id;
        if let Err(e) = seg.file.write_all(bytes) {
            // A torn record must not shift the next ones: this segment takes no more.
            self.retire(inner);
            return Err(io("writing", &self.segment_path(id), &e));
        }
        seg.records += 1;
        if seg.records >= SEGMENT_RECORDS {
            self.retire(inner);
        }
        Ok(id)
    }

    /// The current segment takes no more records (deleted once all of them are resolved).
    fn retire(&self, inner: &mut Inner) {
        if let Some(seg) = inner.current.take() {
            let done = inner.open.get_mut(&seg.id).map(|(unresolved, full)| {
                *full = true;
                *unresolved == 0
            });
            if done == Some(true) {
                self.remove(inner, seg.id);
            }
        }
    }

    /// Forgets segment `id` and has it deleted. Deleting a segment of 1 024 pages takes about a
    /// millisecond here (the filesystem frees its pages and blocks), and the last `resolve` of a
    /// segment runs in the group commit's reply, on the store writer's thread, where every queued
    /// certificate would wait for it: a sweeper thread deletes instead. A segment whose deletion
    /// is still pending at a crash is read at the next start like any other; its records are all
    /// stored or cancelled, so it changes nothing.
    fn remove(&self, inner: &mut Inner, id: u64) {
        inner.open.remove(&id);
        let path = self.segment_path(id);
        let sweeper = self.sweeper.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<PathBuf>();
            std::thread::Builder::new()
                .name("journal-sweep".into())
                .spawn(move || {
                    for p in rx {
                        delete_segment(&p);
                    }
                })
                .ok()
                .map(|_| tx)
        });
        let unsent = match sweeper {
            Some(tx) => tx.send(path).err().map(|e| e.0),
            None => Some(path),
        };
        if let Some(p) = unsent {
            delete_segment(&p);
        }
    }

    /// Records `r` before its certificate is signed.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the record cannot be written (a full or failing filesystem):
    /// nothing may be signed then.
    pub fn reserve(&self, r: &Reservation) -> Result<Ticket> {
        let payload = serde_json::to_vec(r).map_err(|e| Error::Sql(e.to_string()))?;
        let bytes = frame(KIND_RESERVATION, &payload)?;
        let mut inner = self.lock()?;
        let segment = self.append(&mut inner, &bytes)?;
        if let Some((unresolved, _)) = inner.open.get_mut(&segment) {
            *unresolved += 1;
        }
        Ok(Ticket { segment })
    }

    /// The database now holds the outcome of `t`'s reservation durably (the certificate, or its
    /// revocation).
    pub fn resolve(&self, t: Ticket) {
        let Ok(mut inner) = self.lock() else { return };
        let current = inner.current.as_ref().map(|s| s.id);
        let done = inner.open.get_mut(&t.segment).map(|(unresolved, full)| {
            *unresolved = unresolved.saturating_sub(1);
            *unresolved == 0 && *full && current != Some(t.segment)
        });
        if done == Some(true) {
            self.remove(&mut inner, t.segment);
        }
    }

    /// `t`'s reservation was never signed and its release is committed: a tombstone cancels it
    /// (so a restart does not revoke the serial), then it is resolved. A tombstone that cannot be
    /// written leaves the record to the next start, which revokes the serial (harmless: nobody
    /// holds a certificate with it).
    pub fn release(&self, t: Ticket, issuer_ca_id: &str, serial: &str) {
        let stone = Tombstone {
            issuer_ca_id: issuer_ca_id.to_owned(),
            serial: serial.to_owned(),
        };
        let written = serde_json::to_vec(&stone)
            .map_err(|e| Error::Sql(e.to_string()))
            .and_then(|p| frame(KIND_TOMBSTONE, &p))
            .and_then(|bytes| {
                let mut inner = self.lock()?;
                let id = self.append(&mut inner, &bytes)?;
                Ok(id)
            });
        match written {
            Ok(_) => self.resolve(t),
            Err(e) => {
                tracing::warn!(serial, error = %e, "cannot write a reservation tombstone: the next start revokes the serial")
            }
        }
    }

    /// Starts a new segment: the current one takes no more records and goes once its records are
    /// resolved (at once when they are). After a tidy removed stored certificates, so that the
    /// records naming them stop outliving it.
    pub fn rotate(&self) {
        if let Ok(mut inner) = self.lock() {
            self.retire(&mut inner);
        }
    }

    /// At a clean stop, once every queued commit is done: deletes this run's segments whose
    /// records are all resolved, the current one included, so that the next start does not
    /// replay them (a certificate stored and then removed by a tidy would otherwise come back as
    /// an unfinished reservation). Segments with an unresolved record stay for the next start.
    /// Returns how many segments are left.
    pub fn close_resolved(&self) -> usize {
        let Ok(mut inner) = self.lock() else {
            return usize::MAX;
        };
        drop(inner.current.take());
        let done: Vec<u64> = inner
            .open
            .iter()
            .filter(|(_, (unresolved, _))| *unresolved == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            inner.open.remove(&id);
            // Here, not on the sweeper: the process is about to end.
            delete_segment(&self.segment_path(id));
        }
        // Segments handed to the sweeper that it has not deleted yet: every segment of this run
        // that is no longer open is settled.
        let prefix = format!("{}-", self.run);
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let id = name
                    .strip_prefix(&prefix)
                    .and_then(|r| r.strip_suffix(SUFFIX))
                    .and_then(|n| n.parse::<u64>().ok());
                if id.is_some_and(|id| !inner.open.contains_key(&id)) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        inner.open.len()
    }

    /// The segments of earlier runs and their records that no tombstone cancels, oldest first.
    /// Call at start, before the first [`Journal::reserve`].
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the directory or a segment cannot be read; [`Error::Corrupt`]
    /// when a record does not decode.
    pub fn pending(&self) -> Result<(Vec<Reservation>, Vec<PathBuf>)> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), Vec::new()))
            }
            Err(e) => return Err(io("reading", &self.dir, &e)),
        };
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| io("reading", &self.dir, &e))?.path();
            let ours = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(SUFFIX) && !n.starts_with(&self.run));
            if ours {
                paths.push(path);
            }
        }
        paths.sort();
        let mut found = Vec::new();
        let mut released = std::collections::HashSet::new();
        for path in &paths {
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                // Deleted meanwhile by the sweeper of an earlier store on the same database in
                // this process: every record in it was settled.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("reading", path, &e)),
            };
            let (recs, torn) = records(&bytes);
            if torn > 0 {
                tracing::warn!(path = %path.display(), torn, "torn reservation journal records skipped");
            }
            for (kind, payload) in recs {
                let bad = |e: serde_json::Error| {
                    Error::Corrupt(format!("reservation journal {}: {e}", path.display()))
                };
                match kind {
                    KIND_RESERVATION => {
                        found.push(serde_json::from_slice::<Reservation>(payload).map_err(bad)?);
                    }
                    KIND_TOMBSTONE => {
                        let t = serde_json::from_slice::<Tombstone>(payload).map_err(bad)?;
                        released.insert((t.issuer_ca_id, t.serial));
                    }
                    other => {
                        return Err(Error::Corrupt(format!(
                            "reservation journal {}: record kind {other}",
                            path.display()
                        )))
                    }
                }
            }
        }
        found.retain(|r| !released.contains(&(r.row.issuer_ca_id.clone(), r.row.serial.clone())));
        Ok((found, paths))
    }

    /// Deletes segments returned by [`Journal::pending`] once their records are reconciled.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when one cannot be deleted.
    pub fn forget(&self, paths: &[PathBuf]) -> Result<()> {
        for p in paths {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("deleting", p, &e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn reservation(serial: &str) -> Reservation {
        Reservation {
            row: CertRow {
                status: "reserved".into(),
                cert_der: None,
                ..crate::testutil::cert_row("ca1", serial)
            },
            tbs_der: vec![0x30, 0x03, 0x02, 0x01, 0x05],
            started: AuditRecord {
                time: "2026-11-29T00:00:00Z".into(),
                action: "certificate.issue".into(),
                outcome: "started".into(),
                ..AuditRecord::default()
            },
        }
    }

    fn segments(dir: &Path) -> usize {
        std::fs::read_dir(dir).map_or(0, Iterator::count)
    }

    /// The segment count once the sweeper has caught up (it deletes in the background).
    fn segments_settled(dir: &Path, want: usize) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let n = segments(dir);
            if n == want || std::time::Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn records_start_on_fresh_pages_and_survive_into_the_next_run() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("x.db");
        let j = Journal::new(&db);
        let _a = j.reserve(&reservation("01")).unwrap();
        let b = j.reserve(&reservation("02")).unwrap();
        let c = j.reserve(&reservation("03")).unwrap();
        j.resolve(b);
        j.release(c, "ca1", "03");
        let files: Vec<_> = std::fs::read_dir(j.dir()).unwrap().collect();
        assert_eq!(files.len(), 1);
        let len = std::fs::metadata(files[0].as_ref().unwrap().path())
            .unwrap()
            .len();
        assert_eq!(len, 4 * PAGE as u64, "three reservations and a tombstone");
        // This run does not see its own segments; the next one does.
        assert!(j.pending().unwrap().0.is_empty());
        let next = Journal::new(&db);
        assert_ne!(next.run, j.run);
        let (found, paths) = next.pending().unwrap();
        // "02" was resolved but stays on file until its segment goes: the daemon skips what the
        // database already holds. "03" was released: its tombstone cancels it.
        let serials: Vec<_> = found.iter().map(|r| r.row.serial.as_str()).collect();
        assert_eq!(serials, ["01", "02"]);
        assert_eq!(found[0], reservation("01"));
        next.forget(&paths).unwrap();
        assert_eq!(segments(next.dir()), 0);
        assert!(next.pending().unwrap().0.is_empty());
    }

    #[test]
    fn a_full_resolved_segment_is_deleted_and_an_unresolved_one_kept() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::new(&d.path().join("x.db"));
        let mut first = Vec::new();
        for i in 0..SEGMENT_RECORDS {
            first.push(j.reserve(&reservation(&format!("{i:04}"))).unwrap());
        }
        let kept = j.reserve(&reservation("kept")).unwrap();
        assert_eq!(segments(j.dir()), 2);
        for t in first {
            j.resolve(t);
        }
        assert_eq!(
            segments_settled(j.dir(), 1),
            1,
            "the full, resolved segment is gone"
        );
        // The current segment stays while it takes records, resolved or not: it is still
        // tracked (a segment handed to the sweeper is forgotten first) and on disk.
        j.resolve(kept);
        {
            let inner = j.inner.lock().unwrap();
            let current = inner.current.as_ref().map(|s| s.id).unwrap();
            assert!(inner.open.contains_key(&current));
        }
        assert_eq!(segments(j.dir()), 1);
    }

    #[test]
    fn a_clean_stop_deletes_settled_segments_and_keeps_unsettled_ones() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::new(&d.path().join("x.db"));
        let settled = j.reserve(&reservation("a")).unwrap();
        j.resolve(settled);
        assert_eq!(j.close_resolved(), 0);
        assert_eq!(
            segments(j.dir()),
            0,
            "a settled journal is gone after a clean stop"
        );
        // A segment retired by a tidy's rotation with a record still in flight stays.
        let open = j.reserve(&reservation("b")).unwrap();
        j.rotate();
        let later = j.reserve(&reservation("c")).unwrap();
        j.resolve(later);
        assert_eq!(j.close_resolved(), 1);
        assert_eq!(segments(j.dir()), 1);
        let (pending, _) = Journal::new(&d.path().join("x.db")).pending().unwrap();
        assert_eq!(
            pending.len(),
            1,
            "the unsettled record is there for the next start"
        );
        drop(open);
    }

    #[test]
    fn torn_and_corrupt_records_are_skipped_not_shifted() {
        let a = frame(KIND_RESERVATION, b"{\"a\":1}").unwrap();
        let b = frame(KIND_TOMBSTONE, b"{\"b\":2}").unwrap();
        let mut bytes = [a.clone(), b.clone()].concat();
        assert_eq!(
            records(&bytes).0,
            vec![(1, &b"{\"a\":1}"[..]), (2, &b"{\"b\":2}"[..])]
        );
        // A flipped payload octet fails the checksum; the next page still parses.
        bytes[HEADER + 1] ^= 1;
        let (recs, torn) = records(&bytes);
        assert_eq!((recs, torn), (vec![(2, &b"{\"b\":2}"[..])], 1));
        // A record cut short at the end of the file.
        let cut = [a, b[..HEADER + 3].to_vec()].concat();
        assert_eq!(records(&cut), (vec![(1, &b"{\"a\":1}"[..])], 1));
        // Zero pages are padding, not damage.
        assert_eq!(records(&[0u8; 2 * PAGE]), (vec![], 0));
    }

    #[test]
    fn a_full_filesystem_refuses_the_record() {
        // /dev/full answers every write with ENOSPC: a journal whose segment is that device.
        let j = Journal::new(Path::new("/nonexistent-db"));
        let file = OpenOptions::new().append(true).open("/dev/full").unwrap();
        {
            let mut inner = j.inner.lock().unwrap();
            inner.open.insert(0, (0, false));
            inner.next = 1;
            inner.current = Some(Segment {
                id: 0,
                file,
                records: 0,
            });
        }
        let e = j.reserve(&reservation("01")).unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
        let inner = j.inner.lock().unwrap();
        assert!(inner.current.is_none(), "the failed segment takes no more");
    }
}
