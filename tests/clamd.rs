//! The clamd client against a real clamd: memory files reused for FILDES
//! hold only their own body.

mod support;

use std::time::Duration;

use support::{eicar, ClamdProcess};
use virus_scanner::model::Verdict;
use virus_scanner::scan::clamd::{Clamd, ClamdOptions};
use virus_scanner::scan::Scanner;

/// The memory files this process holds open.
fn memfds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("virus-scanner-body"))
        .count()
}

fn infected(v: &Verdict) -> bool {
    matches!(v, Verdict::Infected { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_memory_files_hold_only_their_own_body() {
    let clamd = ClamdProcess::start();
    let options = ClamdOptions {
        connect_timeout: Duration::from_secs(5),
        scan_timeout: Duration::from_secs(30),
        // One scan at a time: one file kept, so every scan reuses it.
        max_concurrency: 1,
        fildes_max: 1 << 20,
        sessions: true,
    };
    let client = Clamd::new(clamd.unix_url().parse().unwrap(), options);
    let scanner = Scanner::new(client.clone(), 1 << 20);

    let mut long = vec![b'.'; 100_000];
    long.extend_from_slice(&eicar());
    let short = vec![b'.'; 100];
    // A long infected body, then a short clean one in the same file: what
    // the long one left beyond the short one's end must not be scanned.
    let v = client.scan_whole(&long).await.unwrap();
    assert!(infected(&v), "{v:?}");
    let v = client.scan_whole(&short).await.unwrap();
    assert_eq!(v, Verdict::Clean);
    let v = client.scan_whole(&eicar()).await.unwrap();
    assert!(infected(&v), "{v:?}");
    // The same through a scan session, written piece by piece.
    for (body, bad) in [
        (&long, true),
        (&short, false),
        (&long, true),
        (&short, false),
    ] {
        let mut session = scanner.session();
        for piece in body.chunks(7_000) {
            session.write(piece).await;
        }
        let v = session.finish().await;
        assert_eq!(infected(&v), bad, "{v:?}");
    }
    assert_eq!(memfds(), 1, "one memory file kept and reused");

    // A body that outgrows FILDES_MAX goes on by INSTREAM from what the
    // file held; the file is kept for the next body all the same, and
    // that body must not see the bytes left in it (EICAR at 500 KiB).
    let roomy = Scanner::new(client.clone(), 8 << 20);
    let kept = memfd_inodes();
    let mut big = vec![b'.'; 500 << 10];
    big.extend_from_slice(&eicar());
    big.resize(3 << 20, b'.');
    for (body, bad) in [(&big, true), (&short, false), (&big, true), (&short, false)] {
        let mut session = roomy.session();
        for piece in body.chunks(64 << 10) {
            session.write(piece).await;
        }
        let v = session.finish().await;
        assert_eq!(infected(&v), bad, "{} bytes: {v:?}", body.len());
    }
    assert_eq!(memfd_inodes(), kept, "the same memory file, kept");
}

/// The inodes of the memory files this process holds open.
fn memfd_inodes() -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let target = std::fs::read_link(&path).ok()?;
            target
                .to_string_lossy()
                .contains("virus-scanner-body")
                .then(|| std::fs::metadata(&path).ok().map(|m| m.ino()))?
        })
        .collect()
}
