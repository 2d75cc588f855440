//! `read_environment_log`: one environment's events in log order, after a position, narrowed
//! by actor, type, stream type and time; read through the index on (environment, log order).

use crate::{event, request, settled_log, unique, Harness};
use appreg_eventstore::{Database, LogFilter, LogPosition, NewEvent};
use chrono::{Duration, SubsecRound, Utc};
use serde_json::json;

fn in_env(env: &str, actor: &str, event_type: &str, at: chrono::DateTime<Utc>) -> NewEvent {
    let mut e = event(1);
    e.event_type = event_type.into();
    e.metadata = json!({"environment": env, "actor": actor, "correlation_id": "c"});
    e.recorded_at = at.trunc_subsecs(6);
    e
}

pub async fn environment_log_is_filtered_and_paged(h: Harness) {
    let store = h.store.as_ref();
    let t0 = Utc::now() - Duration::hours(1);
    let (a, b, c) = (unique("app"), unique("app"), unique("user"));
    store
        .append(request(
            &a,
            0,
            vec![
                in_env("blue", "ann", "Created", t0),
                in_env("blue", "bob", "Updated", t0 + Duration::minutes(1)),
            ],
        ))
        .await
        .unwrap();
    store
        .append(request(&b, 0, vec![in_env("green", "ann", "Created", t0)]))
        .await
        .unwrap();
    let mut user = request(
        &c,
        0,
        vec![in_env("blue", "ann", "Seen", t0 + Duration::minutes(2))],
    );
    user.stream_type = "user".into();
    let last = store.append(user).await.unwrap();
    settled_log(store, last.position).await;

    let blue = LogFilter {
        environment: "blue".into(),
        ..LogFilter::default()
    };
    let all = store
        .read_environment_log(LogPosition::START, &blue, 100)
        .await
        .unwrap();
    let types: Vec<&str> = all.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["Created", "Updated", "Seen"],
        "blue's, in log order"
    );
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));

    // Paged: after the first, at most one.
    let page = store
        .read_environment_log(all[0].position, &blue, 1)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].event_id, all[1].event_id);

    let only = |f: LogFilter| async move {
        store
            .read_environment_log(LogPosition::START, &f, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.event_type.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        only(LogFilter {
            actor: Some("ann".into()),
            ..blue.clone()
        })
        .await,
        ["Created", "Seen"]
    );
    assert_eq!(
        only(LogFilter {
            event_type: Some("Updated".into()),
            ..blue.clone()
        })
        .await,
        ["Updated"]
    );
    assert_eq!(
        only(LogFilter {
            stream_type: Some("user".into()),
            ..blue.clone()
        })
        .await,
        ["Seen"]
    );
    // From inclusive, to exclusive.
    assert_eq!(
        only(LogFilter {
            from: Some(t0.trunc_subsecs(6) + Duration::minutes(1)),
            to: Some(t0.trunc_subsecs(6) + Duration::minutes(2)),
            ..blue.clone()
        })
        .await,
        ["Updated"]
    );
    assert_eq!(
        only(LogFilter {
            environment: "green".into(),
            ..LogFilter::default()
        })
        .await,
        ["Created"]
    );
    assert!(only(LogFilter {
        environment: "nowhere".into(),
        ..LogFilter::default()
    })
    .await
    .is_empty());
}

/// The query can use the index: the plan names it (PostgreSQL with sequential scans off, as a
/// small table would otherwise be scanned; SQLite's planner chooses it by itself).
pub async fn environment_log_reads_the_index(h: Harness) {
    let plan: Vec<String> = match &h.db {
        Database::Postgres(pool) => {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *conn)
                .await
                .unwrap();
            sqlx::query_scalar(
                "EXPLAIN SELECT position FROM events WHERE metadata->>'environment' = 'blue' \
                 AND (tx_id, position) > (0, 0) ORDER BY tx_id, position LIMIT 10",
            )
            .fetch_all(&mut *conn)
            .await
            .unwrap()
        }
        Database::Sqlite(pool) => sqlx::query_as::<_, (i64, i64, i64, String)>(
            "EXPLAIN QUERY PLAN SELECT position FROM events \
             WHERE json_extract(metadata, '$.environment') = 'blue' AND position > 0 \
             ORDER BY position LIMIT 10",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.3)
        .collect(),
    };
    let plan = plan.join("\n");
    assert!(plan.contains("events_environment_log_idx"), "{plan}");
    assert!(
        !plan.to_ascii_lowercase().contains("sort"),
        "no sort: {plan}"
    );
}
