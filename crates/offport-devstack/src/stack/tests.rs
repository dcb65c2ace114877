use super::*;

#[test]
fn a_missing_process_does_not_match() {
    assert!(!process_matches(i32::MAX, "anything"));
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    assert!(process_matches(me, ""));
}

#[test]
fn a_live_process_is_alive_whatever_its_command_line_and_a_reaped_one_is_not() -> Result<()> {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    assert!(process_alive(me));
    // What wait_until sees of a child before its exec: alive, its command line not yet
    // the one looked for.
    assert!(!process_matches(me, "no such command line"));
    assert!(!process_alive(i32::MAX));
    let mut child = Command::new("true").spawn()?;
    let pid = i32::try_from(child.id())?;
    child.wait()?;
    assert!(!process_alive(pid));
    Ok(())
}
