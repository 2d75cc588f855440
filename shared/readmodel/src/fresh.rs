//! `write_fresh!`: the fold of fresh events into a table set, shared by the projector and the
//! rebuild. A macro (not a function) because it runs inside a `with_pool!` transaction of
//! either backend.

/// Writes the rows of `$fresh` (events past the table set's checkpoint, in log order) into the
/// table set `$t` inside the open transaction `$tx`: the touched applications' documents are
/// folded in memory and written back in a few set-based statements per batch. Shared by the
/// projector, the rebuild's replay and the rebuild's final catch-up. The caller writes the
/// checkpoint.
macro_rules! write_fresh {
    ($tx:ident, $t:expr, $fresh:expr) => {{
            // The touched applications' documents, folded in memory, written back in a few
            // set-based statements per batch (not a few per event).
            let mut order: Vec<String> = Vec::new();
            let mut states: HashMap<String, Option<Application>> = HashMap::new();
            // The members of the applications projected before, as projected: only those whose
            // members changed have their membership rows replaced.
            let mut members_before: HashMap<String, std::collections::BTreeMap<appreg_domain::UserId, appreg_domain::Role>> = HashMap::new();
            let app_events: Vec<(&StoredEvent, String)> = $fresh
                .iter()
                .filter(|e| e.stream_type == APPLICATION_STREAM)
                .map(|e| (*e, e.stream_id.strip_prefix("application-").unwrap_or(&e.stream_id).to_string()))
                .collect();
            for (_, id) in &app_events {
                if !states.contains_key(id) {
                    states.insert(id.clone(), None);
                    order.push(id.clone());
                }
            }
            for chunk in order.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(format!("SELECT id, doc FROM {} WHERE id IN (", $t.applications));
                let mut ids = q.separated(", ");
                for id in chunk {
                    ids.push_bind(id.clone());
                }
                ids.push_unseparated(")");
                let rows: Vec<(String, String)> = q.build_query_as().fetch_all(&mut *$tx).await.map_err(db_err)?;
                for (id, doc) in rows {
                    let app = parse_doc(&doc)?;
                    members_before.insert(id.clone(), app.members.clone());
                    states.insert(id.clone(), Some(app));
                }
            }
            for (e, id) in &app_events {
                let state = states.get_mut(id).expect("every touched id has an entry");
                if state.as_ref().is_some_and(|a| a.version >= e.version) {
                    continue; // already included
                }
                *state = Application::evolve(state.take(), &decode_app(e)?, e.recorded_at, e.version);
            }
            let mut rows = Vec::with_capacity(order.len());
            let mut members = Vec::new();
            let mut replaced: Vec<String> = Vec::new();
            for id in &order {
                let Some(app) = &states[id] else {
                    if members_before.contains_key(id) {
                        replaced.push(id.clone());
                    }
                    continue;
                };
                let status = if app.status == appreg_domain::ApplicationStatus::Active { "ACTIVE" } else { "ARCHIVED" };
                rows.push((
                    id.clone(),
                    app.environment.to_string(),
                    status,
                    app.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                    serde_json::to_string(app).map_err(ReadModelError::internal)?,
                    $crate::pending_subscriptions(app),
                ));
                if members_before.get(id) == Some(&app.members) {
                    continue;
                }
                if members_before.contains_key(id) {
                    replaced.push(id.clone());
                }
                for (user, role) in &app.members {
                    members.push((id.clone(), user.to_string(), app.environment.to_string(), role.as_str()));
                }
            }
            for chunk in rows.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(format!("INSERT INTO {} (id, environment, status, created_at, doc, pending_subscriptions) ", $t.applications));
                q.push_values(chunk, |mut b, (id, env, status, created, doc, pending)| {
                    b.push_bind(id.clone()).push_bind(env.clone()).push_bind(*status).push_bind(created.clone()).push_bind(doc.clone()).push_bind(*pending);
                });
                q.push(" ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc, pending_subscriptions = excluded.pending_subscriptions");
                q.build().execute(&mut *$tx).await.map_err(db_err)?;
            }
            // Only applications projected before can have membership rows to replace.
            let known: Vec<&String> = replaced.iter().collect();
            for chunk in known.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(format!("DELETE FROM {} WHERE application_id IN (", $t.members));
                let mut ids = q.separated(", ");
                for id in chunk {
                    ids.push_bind((*id).clone());
                }
                ids.push_unseparated(")");
                q.build().execute(&mut *$tx).await.map_err(db_err)?;
            }
            for chunk in members.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(format!("INSERT INTO {} (application_id, user_id, environment, role) ", $t.members));
                q.push_values(chunk, |mut b, (id, user, env, role)| {
                    b.push_bind(id.clone()).push_bind(user.clone()).push_bind(env.clone()).push_bind(*role);
                });
                q.build().execute(&mut *$tx).await.map_err(db_err)?;
            }
            // Suspected orphans: few events, one statement each.
            for (e, id) in &app_events {
                if !$crate::orphans::concerns(&e.event_type) {
                    continue;
                }
                let Some(app) = states.get(id).and_then(Option::as_ref) else { continue };
                let Some(change) = $crate::orphans::change(id, app.environment.as_str(), &decode_app(e)?) else { continue };
                for (sql, binds) in $crate::orphans::statements($t.orphans, &change) {
                    let mut q = sqlx::query(&sql);
                    for b in binds {
                        q = match b {
                            $crate::orphans::Bind::Text(v) => q.bind(v),
                            $crate::orphans::Bind::Int(v) => q.bind(v),
                            $crate::orphans::Bind::Null => q.bind(None::<String>),
                        };
                    }
                    q.execute(&mut *$tx).await.map_err(db_err)?;
                }
            }
            for e in $fresh.iter() {
                let at = e.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true);
                if e.stream_type == USER_STREAM {
                    let event = UserEvent::decode(&e.event_type, e.schema_version, e.data.clone())
                        .map_err(|err| ReadModelError::event(e, err))?;
                    let env = e.metadata.get("environment").and_then(|v| v.as_str()).unwrap_or_default();
                    match event {
                        // The profile as the event carries it: sealed (the api opens it for the
                        // readers allowed to see it), or an unmigrated event's plaintext.
                        UserEvent::UserFirstSeen(u) => {
                            sqlx::query(&format!(
                                "INSERT INTO {} (environment, user_id, name, email, first_seen) VALUES ($1, $2, $3, $4, $5) \
                                 ON CONFLICT (environment, user_id) DO NOTHING",
                                $t.users
                            ))
                            .bind(env)
                            .bind(u.user.as_str())
                            .bind(u.name.as_ref().map(|p| p.as_str()))
                            .bind(u.email.as_ref().map(|p| p.as_str()))
                            .bind(&at)
                            .execute(&mut *$tx)
                            .await
                            .map_err(db_err)?;
                        }
                        UserEvent::UserErased(u) => {
                            sqlx::query(&format!(
                                "UPDATE {} SET name = NULL, email = NULL WHERE environment = $1 AND user_id = $2",
                                $t.users
                            ))
                            .bind(env)
                            .bind(u.user.as_str())
                            .execute(&mut *$tx)
                            .await
                            .map_err(db_err)?;
                        }
                    }
                } else if e.stream_type == ENVIRONMENT_STREAM {
                    let EnvironmentEvent::EnvironmentCreated(c) =
                        EnvironmentEvent::decode(&e.event_type, e.schema_version, e.data.clone())
                            .map_err(|err| ReadModelError::event(e, err))?;
                    sqlx::query(&format!(
                        "INSERT INTO {} (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
                        $t.environments
                    ))
                    .bind(c.id.as_str())
                    .bind(&c.name)
                    .bind(&at)
                    .execute(&mut *$tx)
                    .await
                    .map_err(db_err)?;
                }
            }
    }};
}
