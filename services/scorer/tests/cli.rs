//! The command line of the binary: `--help`, `--version`, a bad argument.

#[test]
fn help_version_and_a_bad_argument() {
    offport_tests::check_stage_cli(env!("CARGO_BIN_EXE_offport-scorer"), "scorer");
}
