//! `virus-scanner-handler`: takes queued scans from Redis and scans them
//! with clamd. The same as `virus-scanner handler`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    virus_scanner::cli::main(Some("handler"))
}
