//! The deploy benchmark on the systemd + Quadlet guest (`scripts/vm`: Debian 13, systemd as
//! PID 1, podman 5 with Quadlet, Debian's Caddy, under QEMU software emulation), through the
//! production path `codeb-quadlet-update --runtime systemd`.
//!
//! In the same run, interleaved switch by switch:
//! - codeb blue-green: `deploy` of the other release while a load loop in the guest (curl,
//!   one request at a time, bounded in count and time) hits the public port;
//! - the peer: a plain `systemctl restart` of the same unit (a copy of the `.container` file
//!   codeb wrote, on its own port) after pointing its `Image=` at the other release, under the
//!   same load loop.
//!
//! Printed: failed requests during each switch, the time from the command's start to the new
//! release answering, and codeb's overhead over the container's own start plus its first
//! healthy probe (`podman run -d` of the same image until `/api/health` answers). Emulation
//! makes every figure slow; compare the columns, not the absolute numbers. Nothing is asserted.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// At most this many switches per column: each one takes 10-30 s under emulation.
const MAX_RUNS: usize = 5;
/// The registry as the guest sees it (a forward to the host's bench registry).
const GUEST_REGISTRY: &str = "127.0.0.1:15000";

pub fn run(runs: usize) -> Result<(), String> {
    let runs = runs.clamp(1, MAX_RUNS);
    println!(
        "\n## deploy on the systemd + Quadlet guest (scripts/vm, QEMU TCG): codeb blue-green vs `systemctl restart` ({runs} switches each, interleaved)\n"
    );
    let cli = super::bin("codeb-quadlet-update")?;
    let bench = super::deploy::Bench::start()?;
    let result = measure(&cli, &bench, runs);
    bench.cleanup();
    result
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Vm {
    name: String,
    share: PathBuf,
}

impl Vm {
    fn start(registry_port: u16) -> Result<Self, String> {
        let name = format!("bench-{}", std::process::id());
        let share = std::env::temp_dir().join(format!("codeb-bench-guest-{}", std::process::id()));
        fs::create_dir_all(share.join("bin")).map_err(|e| format!("{}: {e}", share.display()))?;
        let t = Instant::now();
        let out = Command::new(root().join("scripts/vm"))
            .args(["start", "--name", &name, "--share"])
            .arg(&share)
            .args(["--forward", &format!("15000={registry_port}")])
            .args(["--watch", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("scripts/vm: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/vm start: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        println!("guest up in {:.1} s", t.elapsed().as_secs_f64());
        Ok(Self { name, share })
    }

    /// Runs `script` with bash as root in the guest; its stdout, or the whole output as error.
    fn sh(&self, script: &str) -> Result<String, String> {
        let mut child = Command::new(root().join("scripts/vm"))
            .args(["ssh", "--name", &self.name, "--", "bash", "-s"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("scripts/vm ssh: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin
                .write_all(format!("set -euo pipefail\n{script}").as_bytes())
                .map_err(|e| format!("scripts/vm ssh: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("scripts/vm ssh: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "in the guest: {}\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/vm"))
            .args(["stop", "--name", &self.name, "--kill"])
            .stdin(Stdio::null())
            .output();
        let _ = fs::remove_dir_all(&self.share);
    }
}

/// Shell functions of the measurement (the load loop, timing, waiting for a version).
const LIB: &str = r#"
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# load_start PORT NAME: sequential GETs until load_stop NAME (at most 20000 or 300 s).
load_start() {
  rm -f /tmp/load-$2.txt /tmp/load-$2.stop
  ( n=0 end=$((SECONDS + 300))
    while [ ! -e /tmp/load-$2.stop ] && [ $n -lt 20000 ] && [ $SECONDS -lt $end ]; do
      curl -s -o /dev/null --max-time 10 -w '%{http_code}\n' http://127.0.0.1:$1/api/health >>/tmp/load-$2.txt || true
      n=$((n + 1))
    done ) &
  echo $! >/tmp/load-$2.pid
}
# load_stop NAME: prints "<requests> <failed>".
load_stop() {
  touch /tmp/load-$1.stop
  wait "$(cat /tmp/load-$1.pid)" 2>/dev/null || true
  echo "$(wc -l </tmp/load-$1.txt) $(grep -vc '^200$' /tmp/load-$1.txt || true)"
}
# wait_version PORT VERSION: until /api/health on PORT reports VERSION (at most 180 s).
wait_version() {
  for _ in $(seq 3600); do
    curl -s --max-time 5 http://127.0.0.1:$1/api/health 2>/dev/null | grep -q "\"version\":\"$2\"" && return 0
    sleep 0.05
  done
  echo "port $1 never answered $2" >&2; return 1
}
deploy() {
  codeb-quadlet-update deploy --project bench --environment production --image "$1" \
    --runtime systemd --expect "version=$2" --drain 2s --health-deadline 120s \
    --health-interval 100ms --successes 1 --health-cmd none --actor bench >/tmp/deploy.log 2>&1
}
"#;

fn measure(cli: &Path, bench: &super::deploy::Bench, runs: usize) -> Result<(), String> {
    let vm = Vm::start(bench.registry_port())?;
    let dest = vm.share.join("bin/codeb-quadlet-update");
    if fs::hard_link(cli, &dest).is_err() {
        fs::copy(cli, &dest).map_err(|e| format!("copy {}: {e}", cli.display()))?;
    }
    let sysctl = fs::read_to_string(root().join("templates/sysctl/90-codeb.conf"))
        .map_err(|e| format!("templates/sysctl/90-codeb.conf: {e}"))?;
    let images: Vec<String> = bench
        .digests()
        .iter()
        .map(|d| format!("{GUEST_REGISTRY}/codeb/sample@{d}"))
        .collect();
    let (v1, v2) = (&images[0], &images[1]);
    let tag = |v: &str| format!("{GUEST_REGISTRY}/codeb/sample:{v}");
    vm.sh(&format!(
        r#"install -m 0755 /mnt/host/bin/codeb-quadlet-update /usr/local/bin/
cat >/etc/sysctl.d/90-codeb.conf <<'EOF'
{sysctl}EOF
sysctl -q --system
mkdir -p /etc/containers/registries.conf.d /home/codeb/config
printf '[[registry]]\nlocation = "{GUEST_REGISTRY}"\ninsecure = true\n' >/etc/containers/registries.conf.d/50-codeb-bench.conf
printf 'version: 1\nprojects:\n  bench:\n    production: {{port: 4001}}\n' >/home/codeb/config/port-manifest.yaml
podman pull -q {v1} >/dev/null && podman pull -q {v2} >/dev/null
{LIB}
deploy {t1} v1 || {{ cat /tmp/deploy.log; exit 1; }}
# The peer: the same unit codeb wrote, as its own service on port 4101.
unit=$(ls /etc/containers/systemd/bench-production-*.container)
sed -e 's/^ContainerName=.*/ContainerName=plain/' -e 's/^PublishPort=.*/PublishPort=127.0.0.1:4101:3000/' \
  "$unit" >/etc/containers/systemd/plain.container
systemctl daemon-reload && systemctl start plain.service && wait_version 4101 v1
"#,
        t1 = tag("v1"),
    ))?;
    println!(
        "guest: {}",
        vm.sh("echo \"$(systemctl --version | head -n1), $(podman --version), caddy $(caddy version | cut -d' ' -f1)\"")?
            .trim()
    );

    let mut rows: Vec<BTreeMap<String, u64>> = Vec::new();
    for i in 0..runs {
        // Alternate v2, v1, v2, ... so every switch changes the release.
        let (version, pinned) = if i % 2 == 0 { ("v2", v2) } else { ("v1", v1) };
        let out = vm.sh(&format!(
            r#"{LIB}
# The container's own start and first healthy probe.
t0=$(now_ms)
podman run -d --rm --init --name bench-base -p 127.0.0.1:4201:3000 {pinned} >/dev/null
wait_version 4201 {version}
echo "base_ms=$(( $(now_ms) - t0 ))"
podman rm -f -t 0 bench-base >/dev/null
# codeb blue-green under load.
load_start 4001 codeb
sleep 1
t0=$(now_ms)
deploy {tagged} {version} &
dpid=$!
wait_version 4001 {version}
echo "codeb_serving_ms=$(( $(now_ms) - t0 ))"
wait $dpid || {{ cat /tmp/deploy.log >&2; exit 1; }}
echo "codeb_exit_ms=$(( $(now_ms) - t0 ))"
sleep 1
read -r total failed < <(load_stop codeb)
echo "codeb_requests=$total"; echo "codeb_failed=$failed"
# The peer: systemctl restart of the same unit with the other image.
sed -i 's|^Image=.*|Image={pinned}|' /etc/containers/systemd/plain.container
systemctl daemon-reload
load_start 4101 plain
sleep 1
t0=$(now_ms)
systemctl restart plain.service
wait_version 4101 {version}
echo "plain_serving_ms=$(( $(now_ms) - t0 ))"
sleep 1
read -r total failed < <(load_stop plain)
echo "plain_requests=$total"; echo "plain_failed=$failed"
"#,
            tagged = tag(version),
        ))?;
        let row: BTreeMap<String, u64> = out
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.trim().parse().ok()?)))
            .collect();
        println!(
            "switch {} to {version}: codeb {} failed of {} ({} ms to serve), systemctl restart {} failed of {} ({} ms), container alone {} ms",
            i + 1,
            row.get("codeb_failed").unwrap_or(&0),
            row.get("codeb_requests").unwrap_or(&0),
            row.get("codeb_serving_ms").unwrap_or(&0),
            row.get("plain_failed").unwrap_or(&0),
            row.get("plain_requests").unwrap_or(&0),
            row.get("plain_serving_ms").unwrap_or(&0),
            row.get("base_ms").unwrap_or(&0),
        );
        rows.push(row);
    }
    let col = |k: &str| -> Vec<u64> {
        rows.iter()
            .map(|r| r.get(k).copied().unwrap_or(0))
            .collect()
    };
    let med = |k: &str| median(col(k));
    let sum = |k: &str| col(k).iter().sum::<u64>();
    let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
    println!("\n| | codeb blue-green | `systemctl restart` of the same unit |");
    println!("|---|---|---|");
    println!(
        "| failed requests per switch (median; all switches) | {} ({} of {}) | {} ({} of {}) |",
        med("codeb_failed"),
        sum("codeb_failed"),
        sum("codeb_requests"),
        med("plain_failed"),
        sum("plain_failed"),
        sum("plain_requests"),
    );
    println!(
        "| command start to the new release answering (median) | {} | {} |",
        secs(med("codeb_serving_ms")),
        secs(med("plain_serving_ms")),
    );
    let base = med("base_ms");
    let serving = med("codeb_serving_ms");
    println!(
        "\ncontainer's own start + first healthy probe (`podman run -d`, median): {}",
        secs(base)
    );
    println!(
        "codeb overhead beyond it (resolve, lock, render, daemon-reload + start, probes, Caddy switch): {} ({:.1}x the container's own; the restart peer takes {:.1}x)",
        secs(serving.saturating_sub(base)),
        serving as f64 / base.max(1) as f64,
        med("plain_serving_ms") as f64 / base.max(1) as f64,
    );
    println!(
        "codeb's command ends after the drain (2 s) and the old slot's stop: {} (median)",
        secs(med("codeb_exit_ms"))
    );
    Ok(())
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}
