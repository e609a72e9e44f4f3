//! Nothing accepted is lost: results answered with 201 survive a kill -9.

mod common;

use common::{Server, ServerOptions, answer_key, sample_banks};
use serde_json::json;

#[tokio::test]
async fn results_survive_kill_9_right_after_201() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = answer_key(&sample_banks(), "world-geography");
    let mut accepted = Vec::new();
    for round in 0..5 {
        let mut server = Server::start(ServerOptions::new(&data));
        let token = server.token(&format!("s{round}@example.com"), "student");
        for _ in 0..10 {
            let (status, doc) = server
                .post(
                    "/api/exams/world-geography/submissions",
                    Some(&token),
                    &json!({"answers": key}),
                )
                .await;
            assert_eq!(status, 201, "{doc}");
            accepted.push(doc);
        }
        // SIGKILL immediately after the last 201: no shutdown, no flush.
        server.kill9();
    }
    let server = Server::start(ServerOptions::new(&data));
    let educator = server.token("ed@example.com", "educator");
    for doc in &accepted {
        let id = doc["_id"].as_str().unwrap();
        let (status, stored) = server
            .get(&format!("/api/results/{id}"), Some(&educator))
            .await;
        assert_eq!(status, 200, "result {id} lost after kill -9");
        assert_eq!(&stored, doc);
    }
    let (_, all) = server.get("/api/results?limit=1000", Some(&educator)).await;
    assert_eq!(all.as_array().unwrap().len(), accepted.len());
}
