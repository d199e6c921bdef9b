//! What is inside a body that clamd would not see, taken apart as the bytes
//! arrive, without I/O: a Content-Encoding undone ([`decode`]), a form
//! upload's parts ([`form`]), a `.deb`'s members and an rpm's payload
//! ([`ar`]), and the zips, tars and packages clamd answers OK for without
//! opening them ([`zip_watch`]). The service (`src/scan/`) sends what comes
//! out to clamd; the fuzz targets in `fuzz/` drive the same code without it.

pub mod ar;
mod bzip2_watch;
mod cpio_walk;
pub mod decode;
mod explode;
pub mod form;
// The fuzz targets' entry points; the unit tests replay what they found.
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
mod iso_walk;
pub mod rpm;
mod tar_watch;
pub mod zip_watch;

/// Runs `work`, which may take long, with the runtime's other tasks
/// moved to another thread meanwhile: the runtime has a thread per core,
/// and 208 bytes of bzip2 unpack for the watch to its whole budget in
/// about 0.6 s, so two such bodies at once held every other request up
/// for that long. In place where that cannot be done (on a runtime of one
/// thread, as in tests) or need not be (off the runtime).
fn off_the_runtime<R>(work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => {
            #[cfg(test)]
            tests::MOVED.with(|moved| moved.set(moved.get() + 1));
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    thread_local! {
        /// Calls of [`off_the_runtime`] on this thread that moved the
        /// runtime's other tasks away.
        pub(super) static MOVED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// CRC-32 (IEEE), bit by bit.
    pub(crate) fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    /// The members a walk of an archive's headers hands on when `body`
    /// is fed to `feed` `piece` bytes at a time; each must be handed on
    /// within the piece that reaches it.
    pub(crate) fn members_walked(
        mut feed: impl FnMut(&[u8], &mut Vec<(u64, u64)>),
        body: &[u8],
        piece: usize,
    ) -> Vec<(u64, u64)> {
        let mut members = Vec::new();
        let mut at = 0;
        for p in body.chunks(piece) {
            let before = members.len();
            feed(p, &mut members);
            for &(begins, _) in &members[before..] {
                assert!(
                    (at..=at + p.len() as u64).contains(&begins),
                    "{begins} in piece at {at}"
                );
            }
            at += p.len() as u64;
        }
        members
    }

    /// `size` bytes that do not compress, different for each size.
    pub(crate) fn noise(size: usize) -> Vec<u8> {
        let mut next = numbers(0x2545_f491_4f6c_dd1d ^ size as u64);
        (0..size).map(|_| next(256) as u8).collect()
    }

    /// Numbers below the one asked, from `seed` (xorshift).
    pub(crate) fn numbers(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        }
    }

    /// What `work` did, and how many times it moved the runtime's other
    /// tasks away.
    pub(crate) fn counting_moves<R>(work: impl FnOnce() -> R) -> (R, usize) {
        let before = MOVED.with(|m| m.get());
        let r = work();
        (r, MOVED.with(|m| m.get()) - before)
    }

    #[test]
    fn long_work_lets_the_runtime_s_other_tasks_run() {
        // One worker thread: without moving them away, the task below
        // could not run before the work ends, and the work waits for it.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let (tx, rx) = std::sync::mpsc::channel();
            let work = tokio::spawn(async move {
                off_the_runtime(|| rx.recv_timeout(Duration::from_secs(60)))
            });
            tokio::spawn(async move { tx.send("ran meanwhile") });
            work.await.unwrap()
        });
        assert_eq!(got, Ok("ran meanwhile"));
        // Outside a runtime, and on a runtime of one thread, in place.
        assert_eq!(counting_moves(|| off_the_runtime(|| 7)), (7, 0));
        let one = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            one.block_on(async { counting_moves(|| off_the_runtime(|| 7)) }),
            (7, 0)
        );
    }
}
