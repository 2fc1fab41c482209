//! Views: apply, map and its chunking, commands, JSON values, typed handles, direct views
//! and the engines' stores.

use super::*;

#[test]
fn apply_round_trip_and_metadata() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let ar = view.apply::<u64, u64>("double", &21u64).unwrap();
    assert_eq!(ar.id().client(), ClientId(CLIENT_ID));
    assert!(ar.wait(SECOND));
    assert!(ar.ready());
    assert!(ar.engine().is_some());
    assert_eq!(ar.elapsed(), Some(Duration::from_micros(1500)));
    assert_eq!(ar.get(SECOND).unwrap(), 42);

    let s: String = view.apply("echo", "hi").unwrap().get(SECOND).unwrap();
    assert_eq!(s, "hi");
    // A result of the wrong type is a decode error naming the task.
    let ar = view.apply::<&str, u64>("echo", "text").unwrap();
    let id = ar.id();
    let err = ar.get(SECOND).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }));
    assert!(err.to_string().contains(&id.to_string()), "{err}");

    let out = view
        .command(CommandSpec {
            program: "echo".into(),
            args: vec!["a".into()],
            ..Default::default()
        })
        .unwrap()
        .get(SECOND)
        .unwrap();
    assert!(out.success());
    assert_eq!(out.stdout, b"echo a");
}

#[test]
fn many_threads_share_one_client() {
    let f = fake(Config::default());
    let client = Arc::new(Client::connect_file(&f.file).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                let view = client.load_balanced_view();
                for i in 0..200u64 {
                    let x = t * 1000 + i;
                    let y: u64 = view.apply("double", x).unwrap().get(SECOND).unwrap();
                    assert_eq!(y, 2 * x);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn map_keeps_order_across_chunks_answered_out_of_order() {
    let f = fake(Config {
        reverse: true,
        batch: 1,
        ..Config::default()
    });
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view().chunksize(7);
    let m = view.map::<_, u64>("double", 0..1000u64).unwrap();
    assert_eq!(m.len(), 1000);
    assert_eq!(m.tasks(), 143);
    assert!(m.wait(SECOND));
    assert_eq!(m.progress(), (1000, 1000));
    let out = m.get(SECOND).unwrap();
    assert_eq!(out, (0..1000u64).map(|x| 2 * x).collect::<Vec<_>>());
    assert_eq!(f.tasks.load(Ordering::SeqCst), 143);
    assert_eq!(f.submits.load(Ordering::SeqCst), 1);

    // One item per task.
    let m = client
        .load_balanced_view()
        .chunksize(1)
        .map::<_, u64>("double", [5u64, 6, 7])
        .unwrap();
    assert_eq!(m.tasks(), 3);
    assert_eq!(m.get(SECOND).unwrap(), vec![10, 12, 14]);

    // An empty map is ready at once and sends nothing.
    let m = view.map::<u64, u64>("double", Vec::<u64>::new()).unwrap();
    assert!(m.is_empty() && m.ready());
    assert_eq!(m.get(None).unwrap(), Vec::<u64>::new());
}

#[test]
fn automatic_chunking_makes_thirty_two_tasks_per_engine_in_one_message() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let m = client
        .load_balanced_view()
        .map::<_, ()>("echo", std::iter::repeat_n((), 10_000))
        .unwrap();
    assert_eq!(m.tasks(), 64);
    assert_eq!(m.get(SECOND).unwrap().len(), 10_000);
    assert_eq!(f.tasks.load(Ordering::SeqCst), 64);
    assert_eq!(f.submits.load(Ordering::SeqCst), 1);
}

#[test]
fn large_items_spread_over_several_submit_messages() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let items: Vec<String> = (0..10).map(|i| format!("{i}").repeat(300_000)).collect();
    let m = client
        .load_balanced_view()
        .map::<String, String>("echo", &items)
        .unwrap();
    assert_eq!(m.get(SECOND).unwrap(), items);
    assert!(f.submits.load(Ordering::SeqCst) >= 3);
}

#[test]
fn json_values_round_trip() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let value = serde_json::json!({
        "a": [1, 2.5, "x", null, true, -3],
        "b": {"nested": [u64::MAX]},
        "c": "text",
    });
    let back = view.apply_json("echo", value.clone()).unwrap().get(SECOND);
    assert_eq!(back.unwrap(), value);
    let items = vec![
        serde_json::json!(1),
        serde_json::json!("two"),
        serde_json::json!([3, {"four": 4.5}]),
    ];
    let back = view
        .chunksize(2)
        .map_json("echo", items.clone())
        .unwrap()
        .get(SECOND);
    assert_eq!(back.unwrap(), items);
}

#[test]
fn direct_view_runs_on_each_engine_in_order() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let ids = [EngineId(1), EngineId(0), EngineId(1)];
    let dv = client.direct_view(&ids);
    let results = dv.apply::<(), u32>("whoami", ()).unwrap();
    assert_eq!(results.len(), 3);
    assert!(results.wait(SECOND));
    let engines: Vec<u32> = results
        .metadata()
        .iter()
        .map(|m| m.engine.unwrap().0)
        .collect();
    let got = results.get(None).unwrap();
    assert_eq!(got, engines);
    assert_eq!(got, vec![1, 0, 1]);
    assert_eq!(f.submits.load(Ordering::SeqCst), 1);
    let outs = dv
        .command(CommandSpec {
            program: "hostname".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(outs.len(), 3);
    for o in outs.get(SECOND).unwrap() {
        assert!(o.success());
    }
    assert!(client
        .direct_view(&[])
        .apply::<(), ()>("noop", &())
        .unwrap()
        .is_empty());
}

#[test]
fn typed_handles_check_types_and_accept_values_or_references() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    // Integer literals take the handle's type; values or references both do.
    assert_eq!(view.apply(DOUBLE, 21).unwrap().get(SECOND).unwrap(), 42);
    let x = 5u64;
    let by_ref = &x;
    assert_eq!(view.apply(DOUBLE, by_ref).unwrap().get(SECOND).unwrap(), 10);
    let items: Vec<u64> = (0..100).collect();
    let doubled = view.map(DOUBLE, &items).unwrap().get(SECOND).unwrap();
    assert_eq!(doubled, items.iter().map(|x| x * 2).collect::<Vec<_>>());
    assert_eq!(view.map(DOUBLE, 0..10).unwrap().get(SECOND).unwrap()[9], 18);
    // Generic stock handles, and names as `String`.
    let echo = stock::echo::<String>();
    assert_eq!(
        view.apply(echo, "hi".to_string())
            .unwrap()
            .get(SECOND)
            .unwrap(),
        "hi"
    );
    let name = String::from("double");
    assert_eq!(
        view.apply::<u64, u64>(&name, 4)
            .unwrap()
            .get(SECOND)
            .unwrap(),
        8
    );
}

#[test]
fn direct_views_push_pull_scatter_and_gather() {
    let f = fake(Config {
        engines: 3,
        ..Config::default()
    });
    let client = Client::connect_file(&f.file).unwrap();
    let dv = client.direct_view(&[EngineId(0), EngineId(1), EngineId(2)]);
    dv.push("k", &"v").unwrap().get(SECOND).unwrap();
    let pulled: Vec<String> = dv.pull("k").unwrap().get(SECOND).unwrap();
    assert_eq!(pulled, ["v", "v", "v"]);
    dv.scatter("xs", 0..10u64).unwrap().get(SECOND).unwrap();
    let parts: Vec<Vec<u64>> = dv.pull("xs").unwrap().get(SECOND).unwrap();
    assert_eq!(parts, vec![vec![0, 1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]);
    let back: Vec<u64> = dv.gather("xs", SECOND).unwrap();
    assert_eq!(back, (0..10).collect::<Vec<_>>());
    let err = dv.gather::<u64>("nothing", SECOND).unwrap_err();
    assert!(matches!(err, Error::Remote { .. }), "{err:?}");
    // Fewer items than engines: some get empty lists.
    dv.scatter("few", ["a", "b"]).unwrap().get(SECOND).unwrap();
    assert_eq!(dv.gather::<String>("few", SECOND).unwrap(), ["a", "b"]);
}
