//! Runs of the `veltix` binary shared by cli.rs and tls_cli.rs: bounded waits, pipes read on
//! threads, and the result of a short-lived command.

#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Deadline for any single line, reply or exit (generous: the machine may be busy).
pub const TIMEOUT: Duration = Duration::from_secs(30);

pub fn veltix() -> Command {
    Command::new(env!("CARGO_BIN_EXE_veltix"))
}

/// Waits for `child` to exit, at most `TIMEOUT`.
pub fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads a pipe to its end on a thread.
pub fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// The result of a short-lived `veltix` command.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("UTF-8 stdout")
    }

    /// Asserts success; returns `self` for the checks that follow.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "expected success; stdout {:?}, stderr {:?}",
            self.stdout_text(),
            self.stderr
        );
        self
    }

    /// Asserts a failure reported as exactly one `veltix: error: ...` line containing `needle`.
    pub fn assert_one_line_error(&self, needle: &str) {
        assert!(
            !self.status.success(),
            "expected failure; stdout {:?}",
            self.stdout_text()
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "stderr should be one line: {:?}",
            self.stderr
        );
        assert!(lines[0].starts_with("veltix: error: "), "{:?}", lines[0]);
        assert!(
            lines[0].contains(needle),
            "{:?} should mention {needle:?}",
            lines[0]
        );
    }
}

/// Runs `veltix ARGS` to completion (bounded).
pub fn run(args: &[&str]) -> Output {
    let mut child = veltix()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn veltix");
    let out = collect(child.stdout.take().expect("stdout"));
    let err = collect(child.stderr.take().expect("stderr"));
    let status = wait_bounded(&mut child, &format!("veltix {args:?}"));
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: String::from_utf8_lossy(&err.join().expect("stderr reader")).into_owned(),
    }
}
