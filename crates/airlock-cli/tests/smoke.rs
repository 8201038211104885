mod common;
use common::*;

#[test]
fn echo_runs_as_root_and_rootless() {
    both(|who| {
        let Some(o) = sh(who, &[], "echo hello; id -un") else {
            return;
        };
        o.ok();
        assert_eq!(o.lines(), ["hello", "sandbox"], "{who:?}");
    });
}
