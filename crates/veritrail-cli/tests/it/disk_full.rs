//! A full disk, for real: the data directory sits on a small tmpfs that the test fills. Appends
//! fail with 503 and store nothing, `/readyz` says not ready, reads are refused because their
//! access events cannot be recorded; once space is free again everything works without a
//! restart, and nothing acknowledged is lost.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::support::{self, Server};

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with one file until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0xa5u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    // Whatever is left below a chunk.
    while f.write_all(&chunk[..512]).is_ok() {}
    path
}

#[test]
fn a_full_disk_refuses_loudly_and_recovers_without_a_restart() {
    if unsafe_geteuid() != 0 {
        panic!("this test mounts a tmpfs and needs root (CI runs as root)");
    }
    let scratch = support::Scratch::new();
    let mount = Tmpfs::mount(&scratch.other("small-disk"), "16m");
    let data = mount.0.join("data");
    let admin = "vt_admin_diskfull_0123456789abcdef0123456789";
    let mut server = Server::start_authenticated(&data, admin);
    let writer = server.key(admin, "producer");
    let reader = server.key(admin, "reader");
    let corr = support::corr("full");
    let post = |s: &Server, n: usize, from: usize| {
        let events: Vec<_> = (from..from + n).map(|i| support::event(i, &corr)).collect();
        s.call(
            reqwest::Method::POST,
            "/v1/events",
            Some(&writer),
            None,
            Some(&json!(events)),
        )
    };
    let first = post(&server, 10, 0);
    assert_eq!(first.status, 200, "{}", first.text);
    let timeline = format!("/v1/correlations/{corr}/timeline");
    assert_eq!(server.get_as(&reader, &timeline).status, 200);

    let filler = fill(&mount.0);
    let refused = post(&server, 10, 10);
    let p = refused.problem(503);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nothing of this request was stored")),
        "{p}"
    );
    let ready = server.get("/readyz");
    assert_eq!(
        ready.status, 503,
        "ready while appends fail: {}",
        ready.text
    );
    let read = server.get_as(&reader, &timeline);
    assert!((500..600).contains(&read.status), "{}", read.text);
    assert!(
        read.text.contains("could not be recorded"),
        "the refusal says why: {}",
        read.text
    );

    std::fs::remove_file(&filler).expect("freeing space");
    let ready = server.get("/readyz");
    assert_eq!(ready.status, 200, "readiness comes back: {}", ready.text);
    let again = post(&server, 10, 10);
    assert_eq!(again.status, 200, "{}", again.text);
    let events = server.get_as(&reader, &timeline).ok_json();
    assert_eq!(
        events["events"].as_array().map(Vec::len),
        Some(20),
        "{events}"
    );
    server.stop();
    let out = support::fsck(&data);
    assert!(out.status.success(), "{}", support::show(&out));
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
