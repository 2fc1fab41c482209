//! The MPI launcher with real `mpiexec` (Open MPI and MPICH) inside a fake host (both listen
//! on every interface, so they run in a namespace): 4 engines register with a real
//! controller, each with its own rank in its environment, run a map, and leave on SIGTERM
//! to mpiexec.

mod common;

use client::stock::{NTH_PRIME, WHOAMI};
use cluster_launcher::mpi::{self, Flavor, MpiRecord, MpiSettings};
use cluster_launcher::run::SystemRunner;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn ranks_of(pid: u32) -> Option<mpi::Rank> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let vars: Vec<(String, String)> = env
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    mpi::rank_from_env(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
}

fn four_engines_through(program: &str, package: &str, want: Flavor) {
    let ready =
        common::unavailable(&[(program, package)]).map_or_else(|| common::net(&["m1"]), Err);
    let Some(net) = common::or_skip("a fake host for mpiexec", ready) else {
        return;
    };
    let ctl = common::Controller::start(&net.gateway, &[]);
    let client = ctl.client();
    let profile = ctl.profile();
    let settings = MpiSettings {
        mpiexec: program.into(),
        ..MpiSettings::default()
    };
    let flavor = mpi::detect(&settings, &SystemRunner::default()).unwrap();
    assert_eq!(flavor, want);
    let argv = mpi::command_line(&settings, flavor, 4, &ctl.engine_command(), true).unwrap();
    let host = net.host("m1").clone();
    let log = profile.log_dir().join(format!("mpi-{program}.log"));
    let t0 = Instant::now();
    let mut child = mpi::spawn(&net.wrap(&host, &argv), &[], &log).unwrap();
    let record = MpiRecord {
        pid: child.id(),
        host: host.hostname.clone(),
        engines: 4,
        command: argv.clone(),
        log: log.clone(),
    };
    record.write(&profile.run_dir()).unwrap();
    assert_eq!(mpi::records(&profile.run_dir()), vec![record]);
    let registered = common::eventually(Duration::from_secs(30), || ctl.engines(&client) == 4);
    assert!(
        registered,
        "4 engines did not register; mpiexec log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    eprintln!(
        "MEASURE {program}: -n 4 to all registered in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let status = client.status().unwrap();
    assert!(status.engines.iter().all(|e| e.host == "m1"), "{status:?}");
    // Each engine registered the rank mpiexec gave it: in the status and in `whoami`.
    let ranks: BTreeSet<u32> = status
        .engines
        .iter()
        .map(|e| {
            let given = ranks_of(e.pid).expect("each engine has a rank").rank;
            assert_eq!(e.rank, Some(given), "engine {} (pid {})", e.id, e.pid);
            given
        })
        .collect();
    assert_eq!(ranks, (0..4).collect());
    let ids: Vec<_> = status.engines.iter().map(|e| e.id).collect();
    let whoami: Vec<client::Whoami> = client
        .direct_view(&ids)
        .apply(WHOAMI, ())
        .unwrap()
        .get(Some(Duration::from_secs(30)))
        .unwrap();
    for (who, e) in whoami.iter().zip(&status.engines) {
        assert_eq!((who.engine_id, who.rank), (e.id, e.rank), "{who:?}");
    }
    let primes: Vec<u64> = client
        .load_balanced_view()
        .map(NTH_PRIME, 0..100u64)
        .unwrap()
        .get(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(primes[99], 541);
    // SIGTERM to mpiexec reaches every rank; the engines leave cleanly.
    // SAFETY: kill(2) on the mpiexec this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(common::eventually(Duration::from_secs(20), || ctl
        .engines(&client)
        == 0));
    let status = child.wait().unwrap();
    eprintln!("{program} ended: {status}");
    drop(ctl);
    drop(net);
}

#[test]
fn open_mpi_starts_four_ranked_engines() {
    four_engines_through("mpiexec.openmpi", "openmpi-bin", Flavor::OpenMpi);
}

#[test]
fn mpich_starts_four_ranked_engines() {
    four_engines_through("mpiexec.mpich", "mpich", Flavor::Mpich);
}
