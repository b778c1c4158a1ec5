//! Helpers shared by the integration tests that run the `brain-ldm` binary on the shrunk
//! public bundle (tests/fixtures/bundle-small).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `brain-ldm` binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_brain-ldm");

/// The shrunk public bundle: random weights, 32×48×32 images.
pub fn bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bundle-small")
}

/// Runs `brain-ldm` with `args`.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// `out`, after checking that the run succeeded (its stderr otherwise).
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
