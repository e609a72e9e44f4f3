//! Where change capture resumes, and who may capture.
//!
//! With Kafka the position lives in MongoDB (`<db>.cdc_offsets`, one document per capture
//! name) next to a lease: of several `serve` or `cdc` processes on one database only the
//! lease holder captures, the others stand by and take over when its lease runs out, and a
//! position is only written under the lease (a process that lost it cannot move the
//! position back). Without Kafka each server keeps its own position in its data dir, as it
//! keeps its own score cards.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::{self, Bson, DateTime, Document, Timestamp, doc};
use mongodb::options::{Acknowledgment, WriteConcern};
use mongodb::{Collection, Database};

use crate::error::{IngestError, Result};

/// The collection holding positions and leases.
pub const OFFSETS_COLLECTION: &str = "cdc_offsets";

/// Where capture resumes.
#[derive(Debug, Clone, PartialEq)]
pub enum Position {
    /// After the event with this change-stream resume token.
    After(Document),
    /// At this cluster time, inclusive: after a finished snapshot that started there.
    At(Timestamp),
    /// A snapshot is due (or was interrupted); the stream starts at this cluster time,
    /// fixed before the snapshot so nothing written meanwhile is missed.
    SnapshotFrom(Timestamp),
}

impl Position {
    fn to_document(&self) -> Document {
        match self {
            Position::After(token) => doc! {"resume_token": token.clone()},
            Position::At(ts) => doc! {"operation_time": *ts},
            Position::SnapshotFrom(ts) => doc! {"snapshot_from": *ts},
        }
    }

    fn from_document(doc: &Document) -> Option<Position> {
        if let Ok(token) = doc.get_document("resume_token") {
            return Some(Position::After(token.clone()));
        }
        if let Ok(ts) = doc.get_timestamp("snapshot_from") {
            return Some(Position::SnapshotFrom(ts));
        }
        doc.get_timestamp("operation_time").ok().map(Position::At)
    }

    /// The stored fields other positions use, to remove when this one is written.
    fn other_fields(&self) -> Document {
        let mut unset = doc! {"resume_token": "", "operation_time": "", "snapshot_from": ""};
        for key in self.to_document().keys() {
            unset.remove(key);
        }
        unset
    }
}

#[async_trait]
pub trait OffsetStore: Send + Sync {
    /// Takes or renews the right to capture; false while another process holds it.
    async fn hold(&self) -> Result<bool>;
    async fn load(&self) -> Result<Option<Position>>;
    /// Records `position`; an error when the lease was lost meanwhile.
    async fn save(&self, position: &Position) -> Result<()>;
    /// Forgets the position (the next start takes a new snapshot).
    async fn clear(&self) -> Result<()>;
    /// Gives the lease up (clean shutdown), so a standby takes over at once.
    async fn release(&self) {}
}

/// Positions and the lease in MongoDB.
pub struct MongoOffsets {
    offsets: Collection<Document>,
    name: String,
    owner: String,
    lease: Duration,
}

impl MongoOffsets {
    /// `name` is the capture's id (its topic); `owner` names this process in the lease.
    pub fn new(db: &Database, name: &str, owner: &str, lease: Duration) -> Self {
        let concern = WriteConcern::builder()
            .w(Acknowledgment::Majority)
            .journal(true)
            .build();
        MongoOffsets {
            offsets: db.collection_with_options(
                OFFSETS_COLLECTION,
                mongodb::options::CollectionOptions::builder()
                    .write_concern(concern)
                    .build(),
            ),
            name: name.to_string(),
            owner: owner.to_string(),
            lease,
        }
    }

    fn expiry(&self) -> DateTime {
        DateTime::from_millis(
            DateTime::now().timestamp_millis()
                + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX / 2),
        )
    }

    /// Updates this capture's document only while this process holds its lease.
    async fn update_held(&self, set: Document, unset: Option<Document>) -> Result<()> {
        let mut update = doc! {"$set": set};
        if let Some(unset) = unset {
            update.insert("$unset", unset);
        }
        let done = self
            .offsets
            .update_one(doc! {"_id": &self.name, "owner": &self.owner}, update)
            .await?;
        if done.matched_count == 1 {
            Ok(())
        } else {
            Err(IngestError::Contention(format!(
                "change capture {:?}: this process ({}) lost its lease; another process captures now",
                self.name, self.owner
            )))
        }
    }
}

#[async_trait]
impl OffsetStore for MongoOffsets {
    async fn hold(&self) -> Result<bool> {
        let now = DateTime::now();
        let taken = self
            .offsets
            .update_one(
                doc! {
                    "_id": &self.name,
                    "$or": [
                        {"owner": &self.owner},
                        {"owner": {"$exists": false}},
                        {"owner": Bson::Null},
                        {"lease_expires_at": {"$lt": now}},
                    ],
                },
                doc! {"$set": {"owner": &self.owner, "lease_expires_at": self.expiry()}},
            )
            .upsert(true)
            .await;
        match taken {
            Ok(_) => Ok(true),
            // The upsert's insert collided with a document held by another owner.
            Err(e) if crate::store::mongo::is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn load(&self) -> Result<Option<Position>> {
        Ok(self
            .offsets
            .find_one(doc! {"_id": &self.name})
            .await?
            .as_ref()
            .and_then(Position::from_document))
    }

    async fn save(&self, position: &Position) -> Result<()> {
        let mut set = position.to_document();
        set.insert("updated_at", DateTime::now());
        set.insert("lease_expires_at", self.expiry());
        self.update_held(set, Some(position.other_fields())).await
    }

    async fn clear(&self) -> Result<()> {
        self.update_held(
            doc! {"updated_at": DateTime::now()},
            Some(doc! {"resume_token": "", "operation_time": "", "snapshot_from": ""}),
        )
        .await
    }

    async fn release(&self) {
        let _ = self
            .offsets
            .update_one(
                doc! {"_id": &self.name, "owner": &self.owner},
                doc! {"$unset": {"owner": "", "lease_expires_at": ""}},
            )
            .await;
    }
}

/// The position in a file of the data dir (no lease: the position is this server's own).
pub struct FileOffsets {
    path: PathBuf,
}

impl FileOffsets {
    pub fn new(path: PathBuf) -> Self {
        FileOffsets { path }
    }
}

#[async_trait]
impl OffsetStore for FileOffsets {
    async fn hold(&self) -> Result<bool> {
        Ok(true)
    }

    async fn load(&self) -> Result<Option<Position>> {
        let path = self.path.clone();
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(IngestError::Task(format!(
                    "reading {}: {e}",
                    path.display()
                )));
            }
        };
        let doc = bson::Document::from_reader(bytes.as_slice()).map_err(|e| {
            IngestError::Task(format!(
                "{} is not a change-capture position ({e}); delete it to take a new snapshot",
                path.display()
            ))
        })?;
        Ok(Position::from_document(&doc))
    }

    async fn save(&self, position: &Position) -> Result<()> {
        let mut bytes = Vec::new();
        position
            .to_document()
            .to_writer(&mut bytes)
            .map_err(|e| IngestError::Task(format!("encoding a capture position: {e}")))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_durably(&path, &bytes))
            .await
            .map_err(|e| IngestError::Task(e.to_string()))?
            .map_err(|e| IngestError::Task(format!("writing a capture position: {e}")))
    }

    async fn clear(&self) -> Result<()> {
        match tokio::fs::remove_file(&self.path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(IngestError::Task(format!(
                "removing {}: {e}",
                self.path.display()
            ))),
        }
    }
}

/// Write to a temporary file, fsync, rename over the old one: a crash leaves the old or
/// the new position, never a torn one.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_position_round_trips_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let offsets = FileOffsets::new(dir.path().join("cdc").join("score.position"));
        assert_eq!(offsets.load().await.unwrap(), None);
        let at = Position::At(Timestamp {
            time: 1_700_000_000,
            increment: 3,
        });
        offsets.save(&at).await.unwrap();
        assert_eq!(offsets.load().await.unwrap(), Some(at));
        let after = Position::After(doc! {"_data": "8263abc"});
        offsets.save(&after).await.unwrap();
        assert_eq!(offsets.load().await.unwrap(), Some(after));
        let due = Position::SnapshotFrom(Timestamp {
            time: 1_700_000_001,
            increment: 1,
        });
        offsets.save(&due).await.unwrap();
        assert_eq!(offsets.load().await.unwrap(), Some(due));
        offsets.clear().await.unwrap();
        assert_eq!(offsets.load().await.unwrap(), None);
        assert!(offsets.hold().await.unwrap());
    }

    #[tokio::test]
    async fn a_garbled_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("score.position");
        std::fs::write(&path, b"not bson").unwrap();
        let e = FileOffsets::new(path).load().await.unwrap_err().to_string();
        assert!(
            e.contains("score.position") && e.contains("delete it"),
            "{e}"
        );
    }
}
