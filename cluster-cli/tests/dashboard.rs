//! `cluster dashboard` against a real local cluster: the token check, the JSON snapshot and
//! the event stream, recovery after a controller restart, and the page in headless Chromium
//! (engines with CPU and memory, the task stream, maps, failures, a controller restart;
//! skipped with a message where `chromium`/`chromedriver` are not installed).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A throw-away cluster folder; its cluster and dashboard are stopped on drop (by pid).
struct Folder {
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Folder {
    fn new() -> Folder {
        Folder {
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cluster"));
        cmd.env("CLUSTER_DIR", self.dir.path())
            .env_remove("CLUSTER_PROGRAM")
            .env_remove("CLUSTER_PROFILE")
            .env_remove("CLUSTER_CLIENT_FILE")
            .args(args);
        cmd
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "cluster {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn profile(&self) -> profiles::Profile {
        profiles::Profile::in_root(self.dir.path(), "default").unwrap()
    }

    /// Starts `cluster dashboard --port 0` and returns its address and token.
    fn dashboard(&mut self) -> (SocketAddr, String) {
        let mut child = self
            .command(&["dashboard", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        self.children.push(child);
        let url = line
            .trim()
            .strip_prefix("dashboard: http://")
            .unwrap_or_else(|| panic!("no URL in {line:?}"));
        let (addr, token) = url.split_once("/?token=").unwrap();
        // The run record says the same.
        let record =
            dashboard::RunRecord::read(&dashboard::run_file(&self.profile().run_dir())).unwrap();
        assert_eq!(record.token, token);
        (addr.parse().unwrap(), token.to_owned())
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let profile = self.profile();
        let mut pids: Vec<u32> = profile
            .engine_records()
            .unwrap_or_default()
            .into_iter()
            .map(|(_, r)| r.pid)
            .collect();
        pids.extend(profile.controller_record().ok().flatten().map(|r| r.pid));
        let _ = self.command(&["stop", "--grace", "1"]).output();
        for pid in pids.into_iter().filter(|p| profiles::process_alive(*p)) {
            // SAFETY: kill(2) on a pid this test's cluster recorded.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// A GET over HTTP/1.1: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (code, body)
}

fn snapshot(addr: SocketAddr, token: &str) -> serde_json::Value {
    let (code, body) = get(addr, &format!("/api/snapshot?token={token}"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls the snapshot until `ok` holds (or panics after `secs` seconds with the last one).
fn wait_for(
    addr: SocketAddr,
    token: &str,
    secs: u64,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = snapshot(addr, token);
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "gave up waiting; last: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn engines(s: &serde_json::Value) -> usize {
    s["engines"].as_array().map_or(0, Vec::len)
}

#[test]
fn dashboard_needs_its_token_and_streams_the_clusters_numbers() {
    let mut folder = Folder::new();
    folder.run_ok(&["start", "-n", "2", "--timeout", "30"]);
    let (addr, token) = folder.dashboard();

    // No token, a wrong one, a truncated one, and every route: 403.
    for path in [
        "/".to_owned(),
        "/?token=0".to_owned(),
        format!("/?token={}", &token[..token.len() - 1]),
        "/app.js".to_owned(),
        "/api/snapshot".to_owned(),
        "/api/events?token=nope".to_owned(),
    ] {
        assert_eq!(get(addr, &path).0, 403, "{path}");
    }
    let (code, page) = get(addr, &format!("/?token={token}"));
    assert_eq!(code, 200);
    assert!(page.contains("<table id=\"engines\""), "{page}");

    let s = wait_for(addr, &token, 15, |s| {
        s["connected"] == true && engines(s) == 2
    });
    let instance = s["controller"]["instance"].clone();

    // Tasks that ran show in the counters and the engines' rows.
    folder.run_ok(&["map", "--function", "nth_prime", "0..40"]);
    let s = wait_for(addr, &token, 10, |s| s["tasks"]["done"].as_u64() >= Some(1));
    let per_engine: u64 = s["engines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["done"].as_u64().unwrap())
        .sum();
    assert!(per_engine >= 1, "{s}");
    assert!(!s["history"].as_array().unwrap().is_empty(), "{s}");

    // The event stream sends a snapshot at once and then about one a second.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET /api/events?token={token} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    let started = Instant::now();
    let mut reader = BufReader::new(stream);
    let mut events = 0;
    let mut line = String::new();
    while events < 3 {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
        if line.starts_with("data: {") {
            let s: serde_json::Value = serde_json::from_str(&line[6..]).unwrap();
            assert_eq!(engines(&s), 2);
            events += 1;
        }
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "3 events took {took:?}");

    // A controller restart: the dashboard says it is gone, then shows the new one.
    folder.run_ok(&["stop", "--grace", "1"]);
    wait_for(addr, &token, 15, |s| s["connected"] == false);
    folder.run_ok(&["start", "-n", "1", "--timeout", "30"]);
    let s = wait_for(addr, &token, 20, |s| {
        s["connected"] == true && engines(s) == 1 && s["controller"]["instance"] != instance
    });
    assert!(s["error"].is_null(), "{s}");
}

/// WebDriver over HTTP/1.1: a JSON request, the JSON answer's `value`.
fn webdriver(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // chromedriver keeps the connection open: read the headers, then Content-Length bytes.
    let mut reader = BufReader::new(s);
    let mut length = 0;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut json = vec![0; length];
    reader.read_exact(&mut json).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("{e}: {head}{}", String::from_utf8_lossy(&json)));
    v["value"].clone()
}

/// Standard base64 (the WebDriver screenshot), without padding checks.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `cluster map` (which exits non-zero when some items fail) and returns its stderr.
fn map_allowing_failures(folder: &Folder, args: &[&str]) -> String {
    let mut all = vec!["map"];
    all.extend_from_slice(args);
    let out = folder.command(&all).output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_page_shows_engines_task_stream_and_failures_in_headless_chromium() {
    let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(chromedriver) = chromedriver else {
        eprintln!(
            "SKIPPED: no chromedriver (apt-get install chromium chromium-driver; .ci/run does)"
        );
        return;
    };
    let mut folder = Folder::new();
    folder.run_ok(&["start", "-n", "3", "--timeout", "30"]);
    let (addr, token) = folder.dashboard();
    // The dashboard's subscriber hears only what is published after it joined.
    wait_for(addr, &token, 15, |s| s["feed"]["live"] == true);
    folder.run_ok(&["map", "--function", "nth_prime", "0..30"]);
    // A map with one failing item: a negative time is refused by the engine.
    let err = map_allowing_failures(
        &folder,
        &[
            "--function",
            "busy_wait",
            "0.05",
            "0.05",
            "-1",
            "0.05",
            "0.05",
            "0.05",
        ],
    );
    assert!(err.contains("1 of 6 items failed"), "{err}");

    let port = free_port();
    let driver = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    folder.children.push(driver);
    let driver: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(driver).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {driver}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile_dir = tempfile::tempdir().unwrap();
    let args = [
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--window-size=1280,1250".to_owned(),
        format!("--user-data-dir={}", profile_dir.path().display()),
    ];
    let session = webdriver(
        driver,
        "POST",
        "/session",
        &serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": args, "binary": "/usr/bin/chromium"}
        }}}),
    );
    let id = session["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {session}"))
        .to_owned();
    let url = format!("http://{addr}/?token={token}");
    webdriver(
        driver,
        "POST",
        &format!("/session/{id}/url"),
        &serde_json::json!({ "url": url }),
    );
    let script = |js: &str| {
        webdriver(
            driver,
            "POST",
            &format!("/session/{id}/execute/sync"),
            &serde_json::json!({"script": js, "args": []}),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = script(
            "return [...document.querySelectorAll('#engine-rows tr')].map(r => r.dataset.engine + ' ' + r.cells[3].textContent + ' ' + r.cells[5].textContent)",
        );
        let done: u64 = rows
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|x| x.as_str()?.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        if rows.as_array().map_or(0, Vec::len) == 3 && done >= 30 {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the page's engines table: {rows}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        rows[0].as_str().unwrap().split(' ').next(),
        Some("0"),
        "{rows}"
    );
    assert!(rows[0].as_str().unwrap().contains("alive"), "{rows}");
    let conn = script("return document.getElementById('conn').textContent");
    assert_eq!(conn, "live");

    // The task stream, the failure list and the engines' CPU and memory.
    let page_state = "return {
        bars: [...document.querySelectorAll('#stream-chart rect')].map(r => r.dataset.function + ' ' + r.getAttribute('class')),
        failures: [...document.querySelectorAll('#failure-rows tr')].map(r => r.textContent),
        rss: [...document.querySelectorAll('#engine-rows td.rss')].map(c => c.textContent),
        cpu: [...document.querySelectorAll('#engine-rows td.cpu')].map(c => c.textContent),
        note: document.getElementById('stream-note').textContent,
    }";
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        let state = script(page_state);
        let texts = |k: &str| -> Vec<String> {
            state[k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| Some(x.as_str()?.to_owned()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let bars = texts("bars");
        let shown = bars.iter().any(|b| b == "nth_prime ok")
            && bars.iter().any(|b| b == "busy_wait ok")
            && bars.iter().any(|b| b == "busy_wait failed");
        let failed = texts("failures")
            .iter()
            .any(|f| f.contains("busy_wait") && f.contains("got -1"));
        let usage = texts("rss").iter().all(|r| r.ends_with("MiB"))
            && texts("cpu").iter().all(|c| c.parse::<f64>().is_ok());
        if shown && failed && usage && texts("rss").len() == 3 {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the page's task stream, failures and engines: {state}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        state["note"].as_str().unwrap().contains("tasks drawn"),
        "{state}"
    );
    // Sorting by pid descending puts the highest pid first.
    script("document.querySelector('th[data-key=pid]').click(); document.querySelector('th[data-key=pid]').click();");
    let pids = script("return [...document.querySelectorAll('#engine-rows tr')].map(r => +r.cells[2].textContent)");
    let pids: Vec<u64> = pids
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    let mut sorted = pids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(pids, sorted);

    // A controller restart (new ports, new key): the page says so, then shows the new
    // cluster and its task stream again.
    folder.run_ok(&["stop", "--grace", "1"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while script("return document.getElementById('conn').textContent") == "live" {
        assert!(
            Instant::now() < deadline,
            "the page did not notice the stop"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    folder.run_ok(&["start", "-n", "3", "--timeout", "30"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Keep some work going until the new controller's tasks are drawn: the dashboard
        // subscribes to the new controller within a few seconds.
        folder.run_ok(&["map", "--function", "sum_range", "0..40"]);
        let state = script(
            "return [document.getElementById('conn').textContent, document.querySelectorAll('#engine-rows tr').length, document.querySelectorAll('#stream-chart rect[data-function=sum_range]').length]",
        );
        if state[0] == "live" && state[1] == 3 && state[2].as_u64() > Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page after a controller restart: {state}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Some busy work for the picture, and the failure again.
    folder.run_ok(&["map", "--function", "nth_prime", "0..3000"]);
    map_allowing_failures(
        &folder,
        &[
            "--function",
            "busy_wait",
            "0.2",
            "-1",
            "0.3",
            "0.2",
            "0.1",
            "0.3",
        ],
    );

    // Keep a screenshot next to the build.
    std::thread::sleep(Duration::from_secs(2));
    let png = webdriver(
        driver,
        "GET",
        &format!("/session/{id}/screenshot"),
        &serde_json::Value::Null,
    );
    let png = base64_decode(png.as_str().unwrap_or_default());
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let _ = std::fs::write(target.join("dashboard.png"), png);
    webdriver(
        driver,
        "DELETE",
        &format!("/session/{id}"),
        &serde_json::Value::Null,
    );
}

/// tmux with `args` on a private server socket (`-L`), so that the test's session is apart
/// from any other.
fn tmux(socket: &str, args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .args(["-L", socket])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cluster_top_shows_the_engines_in_a_terminal_and_quits_on_q() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("SKIPPED: no tmux (apt-get install tmux)");
        return;
    }
    let folder = Folder::new();
    folder.run_ok(&["start", "-n", "2", "--timeout", "30"]);
    let socket = format!("cluster-top-test-{}", std::process::id());
    let command = format!(
        "CLUSTER_DIR='{}' '{}' top",
        folder.dir.path().display(),
        env!("CARGO_BIN_EXE_cluster")
    );
    let out = tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "120",
            "-y",
            "30",
            &command,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let screen = loop {
        let out = tmux(&socket, &["capture-pane", "-p", "-t", "top"]);
        let screen = String::from_utf8_lossy(&out.stdout).into_owned();
        if screen.contains("engines 2 (2 alive)") {
            break screen;
        }
        if Instant::now() > deadline {
            let _ = tmux(&socket, &["kill-server"]);
            panic!("cluster top did not show 2 engines:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(screen.contains("cluster top (q quits)"), "{screen}");
    assert!(screen.contains("alive"), "{screen}");
    tmux(&socket, &["send-keys", "-t", "top", "q"]);
    // `q` ends the program, and with it the session (and the private server).
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux(&socket, &["has-session", "-t", "top"])
        .status
        .success()
    {
        if Instant::now() > deadline {
            let _ = tmux(&socket, &["kill-server"]);
            panic!("cluster top did not quit on q");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dashboard_true_makes_start_run_it_status_show_it_and_stop_stop_it() {
    let folder = Folder::new();
    folder.run_ok(&["profile", "create"]);
    let config = folder.profile().config_file();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\ndashboard = true\ndashboard_port = 0\n");
    std::fs::write(&config, text).unwrap();

    let out = folder
        .command(&["start", "-n", "1", "--timeout", "30"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dashboard: http://127.0.0.1:"), "{err}");
    let record =
        dashboard::RunRecord::read(&dashboard::run_file(&folder.profile().run_dir())).unwrap();
    assert!(record.by_start);
    let status = folder.run_ok(&["status"]);
    assert!(
        status.contains(&format!("dashboard: {}", record.url)),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&folder.run_ok(&["status", "--json"])).unwrap();
    assert_eq!(json["dashboard"]["pid"], record.pid);

    let rest = record.url.strip_prefix("http://").unwrap();
    let (addr, token) = rest.split_once("/?token=").unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    wait_for(addr, token, 15, |s| {
        s["connected"] == true && engines(s) == 1
    });

    folder.run_ok(&["stop", "--grace", "2"]);
    assert!(
        !profiles::process_alive(record.pid),
        "the dashboard outlived `cluster stop`"
    );
}
