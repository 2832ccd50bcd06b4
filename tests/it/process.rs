//! The real binary as a child process (`billing-ledger serve`), for what only a process shows:
//! its log lines on stderr, its exit, its start-up and shutdown.

use crate::support::SECRET;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `billing-ledger serve` child on a free port, its stderr captured.
pub struct ServeProcess {
    child: Child,
    pub base: String,
}

impl ServeProcess {
    /// Starts `serve` on `database_url` with the test secret and `env` added, and waits until
    /// `/healthz` answers.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> ServeProcess {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_billing-ledger"));
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
            .env_remove("RUST_LOG")
            .env_remove("LEDGER_LOG_FORMAT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let process = ServeProcess {
            child: command.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        for _ in 0..400 {
            if http.get(process.url("/healthz")).send().await.is_ok() {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("serve did not start");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and waits for it to be gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM, waits for the exit and returns its status and everything it logged.
    pub fn terminate(self) -> (std::process::ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let output = self.child.wait_with_output().unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}
