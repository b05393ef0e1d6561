//! `understudy-agent`: the per-host agent.

fn main() {
    std::process::exit(understudy_agent::cli::main());
}

/// glibc 2.35 gave `hypot` and `hypotf` new symbol versions, so a binary linked on a newer
/// glibc that calls them (the model runtime does) would not start on glibc 2.34 (RHEL 9).
/// Defined here in the binary itself, from the `libm` crate, they are not asked of glibc;
/// tests/tests/packages.rs checks the highest glibc version the packaged binaries need.
#[allow(unsafe_code)] // `no_mangle`: these two symbols are meant to stand in for glibc's.
mod glibc_compat {
    #[no_mangle]
    pub extern "C" fn hypot(x: f64, y: f64) -> f64 {
        libm::hypot(x, y)
    }

    #[no_mangle]
    pub extern "C" fn hypotf(x: f32, y: f32) -> f32 {
        libm::hypotf(x, y)
    }
}
