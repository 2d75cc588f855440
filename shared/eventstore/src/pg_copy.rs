//! Reading the log in bulk on PostgreSQL, for a replay of the whole log (a read-model rebuild).
//!
//! [`read_log_page`] returns what [`EventStore::read_log`](crate::EventStore::read_log) returns
//! — the events after a position, in log order `(tx_id, position)`, only below the visibility
//! horizon of the reading statement (see the `pg` module) — but read with one
//! `COPY (SELECT …) TO STDOUT (FORMAT binary)` and kept as the page's bytes: each event's fields
//! are slices of them (the payload and metadata as the JSON text `jsonb` prints), so a page of
//! tens of thousands of events costs a few allocations instead of a row, five strings and two
//! `serde_json::Value` trees per event.

use crate::{LogPosition, StoreError, StoredEvent};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::postgres::{PgPool, PgPoolCopyExt};
use std::ops::Range;
use uuid::Uuid;

/// The binary COPY signature, flags and (empty) header extension.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Columns per row, in this order.
const COLUMNS: i16 = 10;
/// PostgreSQL's timestamps count microseconds from 2000-01-01 00:00:00 UTC.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One event of a [`LogPage`], its text fields borrowed from the page.
#[derive(Debug, Clone, Copy)]
pub struct RawEvent<'a> {
    pub position: LogPosition,
    pub event_id: Uuid,
    pub stream_id: &'a str,
    pub stream_type: &'a str,
    pub version: i64,
    pub event_type: &'a str,
    pub schema_version: i32,
    /// The payload's JSON text.
    pub data: &'a str,
    /// The metadata's JSON text, when the page was read with it (see [`read_log_page`]).
    pub metadata: Option<&'a str>,
    pub recorded_at: DateTime<Utc>,
}

impl RawEvent<'_> {
    /// The event as [`EventStore::read_log`](crate::EventStore::read_log) returns it.
    pub fn to_stored(&self) -> Result<StoredEvent, StoreError> {
        let json = |text: &str| {
            serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("jsonb: {e}")))
        };
        Ok(StoredEvent {
            position: self.position,
            event_id: self.event_id,
            stream_id: self.stream_id.to_string(),
            stream_type: self.stream_type.to_string(),
            version: self.version,
            event_type: self.event_type.to_string(),
            schema_version: self.schema_version,
            data: json(self.data)?,
            metadata: json(
                self.metadata
                    .ok_or_else(|| StoreError::Corrupt("metadata not read".into()))?,
            )?,
            recorded_at: self.recorded_at,
        })
    }
}

#[derive(Debug, Clone)]
struct Row {
    position: LogPosition,
    event_id: Uuid,
    version: i64,
    schema_version: i32,
    recorded_at: DateTime<Utc>,
    /// Byte ranges of the page's text.
    stream_id: Range<usize>,
    stream_type: Range<usize>,
    event_type: Range<usize>,
    data: Range<usize>,
    metadata: Option<Range<usize>>,
}

/// A page of the log read by [`read_log_page`]: the text fields of all its events in one
/// string (checked to be UTF-8 once, as they were read), and per event their ranges in it.
#[derive(Debug, Default)]
pub struct LogPage {
    text: String,
    rows: Vec<Row>,
}

impl LogPage {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The position of the page's last event.
    pub fn last_position(&self) -> Option<LogPosition> {
        self.rows.last().map(|r| r.position)
    }

    /// The `i`-th event of the page (panics past [`LogPage::len`]).
    pub fn get(&self, i: usize) -> RawEvent<'_> {
        let r = &self.rows[i];
        RawEvent {
            position: r.position,
            event_id: r.event_id,
            stream_id: &self.text[r.stream_id.clone()],
            stream_type: &self.text[r.stream_type.clone()],
            version: r.version,
            event_type: &self.text[r.event_type.clone()],
            schema_version: r.schema_version,
            data: &self.text[r.data.clone()],
            metadata: r.metadata.clone().map(|m| &self.text[m]),
            recorded_at: r.recorded_at,
        }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = RawEvent<'_>> + '_ {
        (0..self.rows.len()).map(|i| self.get(i))
    }
}

/// Reads up to `limit` events after `after`, as `read_log(after, limit)` would, with one binary
/// `COPY` on a connection of `pool`. `metadata_of`: the stream types whose events come with
/// their metadata (`None`: all); the others' is not read (printing it is a good part of what
/// reading the log costs PostgreSQL).
pub async fn read_log_page(
    pool: &PgPool,
    after: LogPosition,
    limit: i64,
    metadata_of: Option<&[&str]>,
) -> Result<LogPage, StoreError> {
    let metadata = match metadata_of {
        None => "metadata".to_string(),
        Some(types) => {
            let literals: Vec<String> = types
                .iter()
                .map(|t| format!("'{}'", t.replace('\'', "''")))
                .collect();
            if literals.is_empty() {
                "NULL::jsonb".to_string()
            } else {
                format!(
                    "CASE WHEN stream_type IN ({}) THEN metadata END",
                    literals.join(", ")
                )
            }
        }
    };
    // COPY takes no parameters: the values are formatted into the statement.
    let statement = format!(
        "COPY (SELECT tx_id, position, event_id, stream_id, stream_type, version, event_type, \
         schema_version, data, {metadata}, recorded_at FROM events \
         WHERE (tx_id, position) > ({}, {}) AND tx_id < {} \
         ORDER BY tx_id, position LIMIT {}) TO STDOUT (FORMAT binary)",
        after.tx,
        after.pos,
        crate::pg::HORIZON,
        limit.max(0)
    );
    let mut stream = pool.copy_out_raw(&statement).await?;
    let mut parser = Parser::default();
    while let Some(chunk) = stream.next().await {
        parser.feed(&chunk?)?;
    }
    parser.finish()
}

fn malformed(what: &str) -> StoreError {
    StoreError::Corrupt(format!("binary COPY of the log: {what}"))
}

/// Why a tuple could not be read from the bytes at hand.
enum Short {
    /// The bytes end inside it: wait for more.
    Incomplete,
    Malformed(StoreError),
}

impl From<StoreError> for Short {
    fn from(e: StoreError) -> Self {
        Short::Malformed(e)
    }
}

/// A cursor over received bytes of a binary COPY.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Short> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(Short::Incomplete)?;
        let bytes = &self.bytes[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16, Short> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, Short> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// A field's bytes (NULL is refused: every column of the log is NOT NULL).
    fn field(&mut self) -> Result<&[u8], Short> {
        self.nullable()?
            .ok_or_else(|| malformed("unexpected NULL").into())
    }

    fn nullable(&mut self) -> Result<Option<&[u8]>, Short> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| malformed("field length"))?;
        self.take(len).map(Some)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let bytes = self.field()?;
        Ok(bytes
            .try_into()
            .map_err(|_| malformed("unexpected field length"))?)
    }

    fn i64_field(&mut self) -> Result<i64, Short> {
        Ok(i64::from_be_bytes(self.fixed()?))
    }

    /// A text field, appended to `text`; its range there.
    fn text(&mut self, text: &mut String) -> Result<Range<usize>, Short> {
        let bytes = self.field()?;
        let s = std::str::from_utf8(bytes).map_err(|_| malformed("not UTF-8"))?;
        let start = text.len();
        text.push_str(s);
        Ok(start..text.len())
    }

    /// A `jsonb` field: its version byte (1), then its text.
    fn jsonb(&mut self, text: &mut String) -> Result<Range<usize>, Short> {
        self.nullable_jsonb(text)?
            .ok_or_else(|| malformed("unexpected NULL").into())
    }

    fn nullable_jsonb(&mut self, text: &mut String) -> Result<Option<Range<usize>>, Short> {
        let Some(bytes) = self.nullable()? else {
            return Ok(None);
        };
        let json = match bytes.split_first() {
            Some((1, json)) => json,
            _ => return Err(malformed("unknown jsonb format").into()),
        };
        let json = std::str::from_utf8(json).map_err(|_| malformed("not UTF-8"))?;
        let start = text.len();
        text.push_str(json);
        Ok(Some(start..text.len()))
    }
}

/// Reads a binary COPY as its chunks arrive (a tuple may span chunks).
#[derive(Default)]
struct Parser {
    page: LogPage,
    /// Received bytes not read yet (the start of a tuple).
    pending: Vec<u8>,
    header: bool,
    trailer: bool,
}

impl Parser {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            let used = self.read(chunk)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let pending = std::mem::take(&mut self.pending);
            let used = self.read(&pending)?;
            self.pending = pending;
            self.pending.drain(..used);
        }
        Ok(())
    }

    /// Reads the complete tuples at the start of `bytes`; returns how many bytes they took.
    fn read(&mut self, bytes: &[u8]) -> Result<usize, StoreError> {
        let mut c = Cursor { bytes, at: 0 };
        loop {
            let start = c.at;
            let text = self.page.text.len();
            match self.tuple(&mut c) {
                Ok(true) => {}
                Ok(false) => return Ok(c.at),
                Err(Short::Incomplete) => {
                    self.page.text.truncate(text);
                    return Ok(start);
                }
                Err(Short::Malformed(e)) => return Err(e),
            }
        }
    }

    /// Reads the header or one tuple; `false` when there is nothing more to read.
    fn tuple(&mut self, c: &mut Cursor<'_>) -> Result<bool, Short> {
        if self.trailer {
            return if c.at == c.bytes.len() {
                Ok(false)
            } else {
                Err(malformed("data after the trailer").into())
            };
        }
        if c.at == c.bytes.len() {
            return Ok(false);
        }
        if !self.header {
            if c.take(SIGNATURE.len())? != SIGNATURE {
                return Err(malformed("no signature").into());
            }
            let _flags = c.i32()?;
            let extension = c.i32()?;
            c.take(usize::try_from(extension).map_err(|_| malformed("header"))?)?;
            self.header = true;
            return Ok(true);
        }
        let columns = c.i16()?;
        if columns == -1 {
            self.trailer = true;
            return Ok(true);
        }
        // tx_id and position, then the event's columns.
        if columns != COLUMNS + 1 {
            return Err(malformed("unexpected column count").into());
        }
        let text = &mut self.page.text;
        let tx = c.i64_field()?;
        let pos = c.i64_field()?;
        let event_id = Uuid::from_bytes(c.fixed()?);
        let stream_id = c.text(text)?;
        let stream_type = c.text(text)?;
        let version = c.i64_field()?;
        let event_type = c.text(text)?;
        let schema_version = i32::from_be_bytes(c.fixed()?);
        let data = c.jsonb(text)?;
        let metadata = c.nullable_jsonb(text)?;
        let micros = c.i64_field()?;
        let recorded_at = micros
            .checked_add(PG_EPOCH_MICROS)
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(|| malformed("timestamp out of range"))?;
        self.page.rows.push(Row {
            position: LogPosition { tx, pos },
            event_id,
            version,
            schema_version,
            recorded_at,
            stream_id,
            stream_type,
            event_type,
            data,
            metadata,
        });
        Ok(true)
    }

    fn finish(self) -> Result<LogPage, StoreError> {
        if !self.pending.is_empty() || (self.header && !self.trailer) {
            return Err(malformed("truncated"));
        }
        Ok(self.page)
    }
}

#[cfg(test)]
mod tests {
    use super::read_log_page;
    use crate::{AppendRequest, Database, LogPosition, NewEvent, StoredEvent};
    use chrono::{SubsecRound, Utc};
    use futures::StreamExt;
    use serde_json::json;
    use sqlx::postgres::PgPoolCopyExt;
    use std::time::Duration;

    fn event(n: u64) -> NewEvent {
        NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: format!("ThingHappened{}", n % 3),
            schema_version: 1 + (n % 2) as i32,
            data: json!({
                "n": n, "big": i64::MAX, "float": 2.5e-7,
                "text": "a \\ backslash,\ta tab, a\nnewline, \"quotes\", élan ✓ \u{1F600}",
                "nested": {"list": [1, null, true, "x"], "empty": {}},
            }),
            metadata: json!({"environment": "DEFAULT", "actor": "tester\\"}),
            recorded_at: Utc::now().trunc_subsecs(6),
        }
    }

    /// Pages read with COPY are `read_log`'s pages: the same events, fields and order, and the
    /// same limit and start.
    #[tokio::test]
    async fn copy_pages_are_read_log_pages() {
        let url = appreg_test_support::postgres::fresh_postgres_url().await;
        let db = Database::connect(&url, 4).await.unwrap();
        db.migrate().await.unwrap();
        let store = db.event_store().await.unwrap();
        let Database::Postgres(pool) = &db else {
            unreachable!()
        };
        let mut last = LogPosition::START;
        for s in 0..5u64 {
            let done = store
                .append(AppendRequest {
                    stream_id: format!("stream-{s}"),
                    stream_type: if s % 2 == 0 { "application" } else { "user" }.into(),
                    expected_version: 0,
                    events: (0..7).map(|i| event(s * 10 + i)).collect(),
                    claims: vec![],
                    releases: vec![],
                })
                .await
                .unwrap();
            last = done.position;
        }
        // The horizon is cluster-wide: wait until every appended event is visible.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while store.head().await.unwrap() < last {
            assert!(
                tokio::time::Instant::now() < deadline,
                "head never reached {last}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let expected: Vec<StoredEvent> = store.read_log(LogPosition::START, 1000).await.unwrap();
        assert_eq!(expected.len(), 35);
        for page_size in [1, 6, 35, 100] {
            let mut read: Vec<StoredEvent> = Vec::new();
            loop {
                let after = read.last().map_or(LogPosition::START, |e| e.position);
                let page = read_log_page(pool, after, page_size, None).await.unwrap();
                assert!(page.len() as i64 <= page_size);
                assert_eq!(page.last_position(), page.iter().last().map(|e| e.position));
                if page.is_empty() {
                    break;
                }
                read.extend(page.iter().map(|e| e.to_stored().unwrap()));
            }
            assert_eq!(read, expected, "pages of {page_size}");
        }
        let empty = read_log_page(pool, last, 10, None).await.unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.last_position(), None);

        // Only the metadata asked for.
        for types in [&["user"][..], &[], &["user", "application", "it's"]] {
            let page = read_log_page(pool, LogPosition::START, 100, Some(types))
                .await
                .unwrap();
            assert_eq!(page.len(), expected.len());
            for (e, stored) in page.iter().zip(&expected) {
                if types.contains(&e.stream_type) {
                    assert_eq!(e.to_stored().unwrap(), *stored);
                } else {
                    assert_eq!(e.metadata, None);
                    let data: serde_json::Value = serde_json::from_str(e.data).unwrap();
                    assert_eq!(
                        (e.position, e.event_id, e.stream_id, &data),
                        (
                            stored.position,
                            stored.event_id,
                            stored.stream_id.as_str(),
                            &stored.data
                        )
                    );
                }
            }
        }

        // Tuples split anywhere between the chunks of the COPY are read the same.
        let mut copy = pool
            .copy_out_raw(
                "COPY (SELECT tx_id, position, event_id, stream_id, stream_type, version, \
                 event_type, schema_version, data, metadata, recorded_at FROM events \
                 ORDER BY tx_id, position) TO STDOUT (FORMAT binary)",
            )
            .await
            .unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = copy.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        for size in [1, 2, 7, 64, 1000, bytes.len()] {
            let mut parser = super::Parser::default();
            for chunk in bytes.chunks(size) {
                parser.feed(chunk).unwrap();
            }
            let page = parser.finish().unwrap();
            let read: Vec<StoredEvent> = page.iter().map(|e| e.to_stored().unwrap()).collect();
            assert_eq!(read, expected, "chunks of {size}");
        }
        let mut parser = super::Parser::default();
        parser.feed(&bytes[..bytes.len() - 3]).unwrap();
        assert!(parser.finish().is_err(), "a truncated COPY is an error");
    }
}
