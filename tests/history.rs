//! Completed drivers past the in-memory window stay queryable from the state file: by id over
//! gRPC, JSON and the UI, page by page across memory and the history, after a restart too, and
//! no more of them than `--retained-history` says.

mod support;

use std::{collections::BTreeSet, time::Duration};

use support::{Cluster, MasterOptions};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_drivers_past_the_window_are_read_from_the_history() {
    let mut cluster = Cluster::start_with(MasterOptions {
        extra: ["--retained-drivers", "2", "--retained-history", "5"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    cluster.spawn_worker(2, "1g", &[]);
    let mut ids = Vec::new();
    for n in 0..9 {
        let id = cluster.submit(&["--memory", "32m", "--", "sh", "-c", &format!("exit {n}")]);
        cluster
            .wait_state(&id, if n == 0 { "FINISHED" } else { "FAILED" }, LIMIT)
            .await;
        ids.push(id);
    }
    let client = cluster.client().await;

    // In memory: the 2 most recent completed; in the history: the 5 before them.
    let listed: BTreeSet<String> = client
        .drivers()
        .await
        .expect("unpaged list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed, ids[7..].iter().cloned().collect());
    let from_history = client
        .driver(&ids[3])
        .await
        .expect("a driver in the history");
    assert_eq!(from_history.exit_code, Some(3));
    let trimmed = client
        .driver(&ids[1])
        .await
        .expect_err("past --retained-history");
    let hearth_common::Error::Status(status) = trimmed else {
        panic!("not a gRPC status: {trimmed}");
    };
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    // Paged: every driver still kept, newest first, each once.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = client.drivers_page(3, &token).await.expect("a page");
        assert!(page.len() <= 3);
        paged.extend(page.into_iter().map(|d| d.id));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    let newest_first: Vec<String> = ids[2..].iter().rev().cloned().collect();
    assert_eq!(paged, newest_first);

    // The UI and the JSON API read it too.
    let (code, page) = cluster.http_get(&format!("/drivers/{}", ids[3]));
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("FAILED"), "{page}");
    let json = cluster.json(&format!("/api/v1/drivers/{}", ids[4]));
    assert_eq!(json["id"], ids[4].as_str(), "{json}");
    let (code, overview) = cluster.http_get("/");
    assert_eq!(code, 200);
    for id in &ids[2..] {
        assert!(overview.contains(id.as_str()), "{id} not on the overview");
    }
    assert!(!overview.contains(ids[1].as_str()));

    // A restarted master reads only what is in memory, and still finds the history.
    cluster.restart_master(&[]);
    let client = cluster.client().await;
    let again = client
        .driver(&ids[3])
        .await
        .expect("the history after a restart");
    assert_eq!(again.exit_code, Some(3));
    let listed = client.drivers().await.expect("unpaged list").len();
    assert_eq!(listed, 2, "only the window is loaded into memory");
}
