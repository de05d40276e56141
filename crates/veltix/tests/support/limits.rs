//! The process's descriptor limit, for tests that open thousands of connections.
#![allow(dead_code)]

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The current soft RLIMIT_NOFILE.
pub fn nofile() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Raises RLIMIT_NOFILE towards `want`: the hard limit too when it is lower (only a process with
/// CAP_SYS_RESOURCE may; a refusal is harmless), then the soft limit to `want` or the hard
/// limit, whichever is lower. Returns the soft limit; an error says why the soft limit could
/// not be set. Nothing is changed when the soft limit is already at least `want`.
pub fn raise_nofile(want: u64) -> Result<u64, String> {
    let lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|c| c >= want) {
        return Ok(nofile());
    }
    if lim.maximum.is_some_and(|h| h < want) {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: Some(want),
            },
        );
    }
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(want.min(hard)),
            maximum: lim.maximum,
        },
    )
    .map_err(|e| format!("cannot raise RLIMIT_NOFILE ({lim:?}) towards {want}: {e}"))?;
    Ok(nofile())
}
