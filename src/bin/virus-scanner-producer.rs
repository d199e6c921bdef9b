//! `virus-scanner-producer`: the ICAP server, queuing every scan to the
//! handlers through Redis. The same as `virus-scanner producer`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    virus_scanner::cli::main(Some("producer"))
}
