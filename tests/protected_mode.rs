//! Protected mode from a real non-loopback client: the test builds its own network namespace
//! joined to this host by a veth pair (link-local addresses, nothing leaves the machine) and
//! connects from inside it. Without a password Strata must refuse that client with DENIED;
//! with `requirepass` set it must accept it (and ask for AUTH). Needs root, as CI has.

mod support;

use std::process::Command;

struct NetNs {
    name: String,
    host_if: String,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip")
        .args(args)
        .status()
        .expect("ip(8) is needed");
    assert!(
        st.success(),
        "ip {args:?} failed (this test needs root and iproute2)"
    );
}

/// Best-effort cleanup of leftovers; failure (nothing to delete) is expected.
fn quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status();
}

impl NetNs {
    fn new() -> NetNs {
        let id = std::process::id() % 10000;
        let name = format!("strata-pm-{id}");
        let host_if = format!("stph{id}");
        let ns_if = format!("stpn{id}");
        quiet(&["netns", "del", &name]);
        quiet(&["link", "del", &host_if]);
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", "169.254.213.1/30", "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            "169.254.213.2/30",
            "dev",
            &ns_if,
        ]);
        ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"]);
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        NetNs { name, host_if }
    }

    /// Runs redis-cli inside the namespace against the host end of the veth pair.
    fn redis_cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "redis-cli",
                "-h",
                "169.254.213.1",
            ])
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn protected_mode_refuses_remote_clients_without_password() {
    let ns = NetNs::new();
    let open = support::Strata::with_config_env("", &[("STRATA_SERVER_BIND", "0.0.0.0")]);
    let remote = ns.redis_cli(open.port, &["ping"]);
    assert!(
        remote.contains("DENIED"),
        "remote client was not refused: {remote:?}"
    );
    // Loopback clients are still served.
    let mut c = open.conn();
    let pong: String = redis::cmd("PING").query(&mut c).expect("ping");
    assert_eq!(pong, "PONG");

    let guarded = support::Strata::with_config_env(
        "[server]\nrequirepass = \"s3cret\"\n",
        &[("STRATA_SERVER_BIND", "0.0.0.0")],
    );
    let remote = ns.redis_cli(guarded.port, &["ping"]);
    assert!(
        remote.contains("NOAUTH"),
        "expected an AUTH request: {remote:?}"
    );
    let remote = ns.redis_cli(guarded.port, &["-a", "s3cret", "--no-auth-warning", "ping"]);
    assert!(
        remote.contains("PONG"),
        "authenticated remote client refused: {remote:?}"
    );
}
