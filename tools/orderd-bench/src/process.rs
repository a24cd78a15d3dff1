//! Server processes the bench starts (the real `orderd`, the bare HTTP handler): a free
//! loopback port, start-up with the output in a log file, waiting until the server answers
//! ready, and a stop by SIGTERM (SIGKILL if it does not end in time, and always on drop, so
//! that an error in the bench leaves no server behind).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper::{Method, StatusCode};

use crate::http_client::HttpConn;

/// A free port on 127.0.0.1 (the kernel's choice; free when this returns, so a server started
/// right after can bind it).
pub fn free_loopback_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

pub struct ServerProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `command` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<ServerProcess> {
        let out = std::fs::File::create(log)
            .with_context(|| format!("create the log file {}", log.display()))?;
        let err = out.try_clone().context("duplicate the log file")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {name} ({command:?})"))?;
        Ok(ServerProcess {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The last lines of the server's output, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Polls `GET path` on `addr` until it answers 200, the process exits, or `timeout` passes.
    pub async fn wait_ready(
        &mut self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child_mut()?.try_wait()? {
                bail!(
                    "{} exited with {status} before it was ready; its output ends with:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            let last_error = match HttpConn::connect(addr).await {
                Ok(mut conn) => match conn.request(Method::GET, path, None, None).await {
                    Ok((StatusCode::OK, _)) => return Ok(()),
                    Ok((status, body)) => {
                        format!("{status}: {}", String::from_utf8_lossy(&body))
                    }
                    Err(error) => format!("{error:#}"),
                },
                Err(error) => format!("{error:#}"),
            };
            if started.elapsed() > timeout {
                bail!(
                    "{} did not answer {path} with 200 within {:.0} s (last: {last_error}); its output ends with:\n{}",
                    self.name,
                    timeout.as_secs_f64(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn child_mut(&mut self) -> Result<&mut Child> {
        self.child
            .as_mut()
            .with_context(|| format!("{} was already stopped", self.name))
    }

    /// SIGTERM, then waits up to `grace` for the exit; SIGKILL after that.
    pub async fn terminate(mut self, grace: Duration) -> Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        signal(&child, libc::SIGTERM);
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > grace {
                signal(&child, libc::SIGKILL);
                let status = child.wait()?;
                bail!(
                    "{} did not stop within {:.0} s of SIGTERM and was killed ({status})",
                    self.name,
                    grace.as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    // The pid is our own child's, not yet reaped (it is only reaped by `wait`), so it cannot
    // name another process.
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a valid signal number has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                signal(&child, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}
