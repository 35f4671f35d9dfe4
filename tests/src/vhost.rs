//! A virtual host of its own on the test broker, standing in for "another
//! broker": a different connection, login and namespace, which is all
//! another broker is to a worker. Made with `rabbitmqctl` (the tests run
//! on the broker's machine, as root) and deleted when dropped, so a failed
//! test leaves none behind.

use std::process::Command;

#[derive(Debug)]
pub struct ScratchVhost {
    pub name: String,
}

impl ScratchVhost {
    /// Creates `name` and gives `user` every permission in it.
    pub fn create(name: &str, user: &str) -> Self {
        rabbitmqctl(&["add_vhost", name]);
        let vhost = Self {
            name: name.to_owned(),
        };
        rabbitmqctl(&["set_permissions", "-p", name, user, ".*", ".*", ".*"]);
        vhost
    }

    /// Closes every connection to this vhost, as a broker restart or a
    /// network cut would.
    pub fn close_connections(&self) {
        rabbitmqctl(&[
            "close_all_connections",
            "-p",
            &self.name,
            "test: connection lost",
        ]);
    }

    /// `base` (an `amqp://` URL) with this vhost as its path.
    pub fn url(&self, base: &str) -> String {
        let mut url = reqwest::Url::parse(base).expect("an AMQP URL");
        url.set_path(&format!("/{}", self.name));
        url.to_string()
    }
}

impl Drop for ScratchVhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
