//! Running model-written programs: a child process in a fresh temporary directory, with an
//! address-space limit, a CPU-time limit, a file-size limit, a wall-clock timeout that kills
//! its whole process group, an empty environment, and no network where the kernel allows an
//! unprivileged network namespace (`unshare -rn`). Where it does not, the program runs after a
//! guard that disables Python's sockets: that stops ordinary code, not a determined attacker,
//! and [`Sandbox::network_isolated`] says which applies.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

/// Limits of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SandboxLimits {
    pub wall_seconds: f64,
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
}

impl SandboxLimits {
    /// `wall_seconds` of wall time, as many CPU seconds (rounded up), `memory_mib` of address space.
    pub fn new(wall_seconds: f64, memory_mib: u64) -> Self {
        Self { wall_seconds, cpu_seconds: wall_seconds.ceil().max(1.0) as u64, memory_bytes: memory_mib << 20 }
    }
}

/// How a program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exit status 0.
    Passed,
    /// Non-zero exit (a failed assertion, an exception).
    Failed,
    /// Killed at the wall-clock or CPU-time limit.
    Timeout,
    /// Ran out of its address space (MemoryError, or killed allocating).
    MemoryLimit,
    /// Killed by another signal.
    Crashed,
}

/// What one run produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub outcome: Outcome,
    pub wall_seconds: f64,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The end of stderr (at most 2 kB), for reading why it failed.
    pub stderr_tail: String,
}

/// A Python interpreter and the isolation available for it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    python: PathBuf,
    unshare: Option<PathBuf>,
}

/// Disables sockets before the program runs when no network namespace is available.
const SOCKET_GUARD: &str = "import socket as _s\n\
def _no_network(*a, **k):\n    raise OSError('network access is disabled in the sandbox')\n\
_s.socket = _no_network\n_s.create_connection = _no_network\n_s.getaddrinfo = _no_network\ndel _s\n";

impl Sandbox {
    /// `python3` from PATH, or why not (the caller skips code tasks with that message).
    pub fn detect() -> std::result::Result<Self, String> {
        let python = find_on_path("python3").ok_or_else(|| "python3 is not on PATH: code tasks are skipped".to_string())?;
        let works = Command::new(&python).arg("-c").arg("pass").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !works.is_ok_and(|s| s.success()) {
            return Err(format!("{} does not run: code tasks are skipped", python.display()));
        }
        // Probe: an unprivileged user + network namespace, and python inside it.
        let unshare = find_on_path("unshare").filter(|u| {
            Command::new(u)
                .args(["-rn"])
                .arg(&python)
                .args(["-c", "pass"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        Ok(Self { python, unshare })
    }

    /// Whether programs run in a network namespace of their own (no interfaces but loopback).
    pub fn network_isolated(&self) -> bool {
        self.unshare.is_some()
    }

    /// Runs `program` (Python source) under `limits` in a fresh temporary directory.
    pub fn run_python(&self, program: &str, limits: SandboxLimits) -> Result<RunReport> {
        let dir = tempfile::Builder::new().prefix("ds-eval-sandbox-").tempdir().context("cannot create a sandbox directory")?;
        let source = if self.network_isolated() { program.to_string() } else { format!("{SOCKET_GUARD}{program}") };
        let script = dir.path().join("program.py");
        std::fs::write(&script, source).with_context(|| format!("cannot write {}", script.display()))?;
        let (stdout_path, stderr_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut command = match &self.unshare {
            Some(unshare) => {
                let mut c = Command::new(unshare);
                c.arg("-rn").arg(&self.python);
                c
            }
            None => Command::new(&self.python),
        };
        // -I: isolated mode (no user site, no PYTHON* variables, script dir not on sys.path).
        command
            .arg("-I")
            .arg(&script)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", dir.path())
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path)?)
            .stderr(std::fs::File::create(&stderr_path)?);
        apply_limits(&mut command, limits);
        let started = Instant::now();
        let mut child = command.spawn().with_context(|| format!("cannot start {}", self.python.display()))?;
        let deadline = Duration::from_secs_f64(limits.wall_seconds);
        let (status, timed_out) = loop {
            if let Some(status) = child.try_wait()? {
                break (status, false);
            }
            if started.elapsed() >= deadline {
                kill_group(child.id());
                break (child.wait()?, true);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let wall_seconds = started.elapsed().as_secs_f64();
        let stderr_tail = tail(&stderr_path, 2048);
        Ok(classify(status, timed_out, wall_seconds, stderr_tail))
    }
}

fn classify(status: ExitStatus, timed_out: bool, wall_seconds: f64, stderr_tail: String) -> RunReport {
    use std::os::unix::process::ExitStatusExt;
    let (exit_code, signal) = (status.code(), status.signal());
    let out_of_memory = stderr_tail.contains("MemoryError") || stderr_tail.contains("Cannot allocate memory");
    let outcome = if timed_out || signal == Some(libc::SIGXCPU) {
        Outcome::Timeout
    } else if status.success() {
        Outcome::Passed
    } else if out_of_memory || signal == Some(libc::SIGKILL) {
        // SIGKILL we did not send: the kernel's OOM killer.
        Outcome::MemoryLimit
    } else if signal.is_some() {
        Outcome::Crashed
    } else {
        Outcome::Failed
    };
    RunReport { outcome, wall_seconds, exit_code, signal, stderr_tail }
}

/// In the child between fork and exec: its own process group (so a timeout kills everything
/// it started) and rlimits. Written with libc: std has no rlimit API and these are four calls.
fn apply_limits(command: &mut Command, limits: SandboxLimits) {
    use std::os::unix::process::CommandExt;
    let set = |resource, value: u64| {
        let limit = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
        // SAFETY: setrlimit reads the struct we pass; async-signal-safe.
        unsafe { libc::setrlimit(resource, &limit) }
    };
    // SAFETY: only async-signal-safe calls (setpgid, setrlimit) run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            libc::setpgid(0, 0);
            set(libc::RLIMIT_AS, limits.memory_bytes);
            // The hard limit one second later: SIGXCPU first (reported as a timeout), then SIGKILL.
            let cpu = libc::rlimit { rlim_cur: limits.cpu_seconds as libc::rlim_t, rlim_max: (limits.cpu_seconds + 1) as libc::rlim_t };
            libc::setrlimit(libc::RLIMIT_CPU, &cpu);
            set(libc::RLIMIT_FSIZE, 64 << 20);
            set(libc::RLIMIT_CORE, 0);
            Ok(())
        });
    }
}

fn kill_group(pid: u32) {
    // SAFETY: signals the process group the child created with setpgid(0, 0).
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

fn tail(path: &Path, max: usize) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Option<Sandbox> {
        match Sandbox::detect() {
            Ok(s) => Some(s),
            Err(reason) => {
                println!("skipped: {reason}");
                None
            }
        }
    }

    #[test]
    fn passing_and_failing_programs() {
        let Some(sandbox) = sandbox() else { return };
        let limits = SandboxLimits::new(10.0, 512);
        assert_eq!(sandbox.run_python("assert 1 + 1 == 2\n", limits).unwrap().outcome, Outcome::Passed);
        let failed = sandbox.run_python("assert 1 + 1 == 3, 'arithmetic'\n", limits).unwrap();
        assert_eq!(failed.outcome, Outcome::Failed);
        assert!(failed.stderr_tail.contains("arithmetic"), "{}", failed.stderr_tail);
    }

    #[test]
    fn endless_loop_is_killed_and_reported() {
        let Some(sandbox) = sandbox() else { return };
        let report = sandbox.run_python("while True:\n    pass\n", SandboxLimits::new(1.0, 512)).unwrap();
        assert_eq!(report.outcome, Outcome::Timeout);
        assert!(report.wall_seconds < 5.0, "{report:?}");
        // A sleeping program uses no CPU: the wall clock kills it.
        let report = sandbox.run_python("import time\ntime.sleep(60)\n", SandboxLimits::new(0.5, 512)).unwrap();
        assert_eq!(report.outcome, Outcome::Timeout);
        assert!(report.wall_seconds < 5.0, "{report:?}");
    }

    #[test]
    fn unbounded_allocation_is_stopped_and_reported() {
        let Some(sandbox) = sandbox() else { return };
        let program = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n";
        let report = sandbox.run_python(program, SandboxLimits::new(20.0, 256)).unwrap();
        assert_eq!(report.outcome, Outcome::MemoryLimit, "{report:?}");
    }

    #[test]
    fn runs_in_a_fresh_directory_without_network() {
        let Some(sandbox) = sandbox() else { return };
        let program = "import os, socket\nassert os.listdir('.') == ['program.py'] or sorted(os.listdir('.')) == ['program.py', 'stderr', 'stdout']\n\
try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n    raise SystemExit(3)\nexcept OSError:\n    pass\n";
        let report = sandbox.run_python(program, SandboxLimits::new(10.0, 512)).unwrap();
        assert_eq!(report.outcome, Outcome::Passed, "{report:?}");
        println!("network namespace: {}", sandbox.network_isolated());
    }
}
