//! `virus-scanner`: `all`, `producer`, `handler`, `queue-status` and
//! `bench`; see `virus_scanner::cli`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    virus_scanner::cli::main(None)
}
