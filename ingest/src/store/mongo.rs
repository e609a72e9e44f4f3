//! The production store: MongoDB database `exams`, collection `score`, one `insert_one`
//! per result in the seed's document shape. Debezium captures these inserts into Kafka,
//! so this store keeps no outbox. Writes use majority write concern with journaling so a
//! result is durable before the API answers.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use mongodb::options::{Acknowledgment, WriteConcern};
use mongodb::{Client, Collection};

use super::{ResultFilter, ResultStore};
use crate::document::{ResultDocument, bson_to_plain_json};
use crate::error::{IngestError, Result};

pub const DATABASE: &str = "exams";
pub const COLLECTION: &str = "score";

pub struct MongoStore {
    client: Client,
    collection: Collection<Document>,
}

impl MongoStore {
    /// Connects to `uri` and uses database `database` (default `exams`), collection `score`.
    pub async fn connect(uri: &str, database: Option<&str>) -> Result<Self> {
        let client = Client::with_uri_str(uri).await?;
        let concern = WriteConcern::builder()
            .w(Acknowledgment::Majority)
            .journal(true)
            .build();
        let collection = client
            .database(database.unwrap_or(DATABASE))
            .collection_with_options::<Document>(
                COLLECTION,
                mongodb::options::CollectionOptions::builder()
                    .write_concern(concern)
                    .build(),
            );
        Ok(MongoStore { client, collection })
    }

    /// Drops the collection (tests only use this on their own database).
    pub async fn drop_collection(&self) -> Result<()> {
        Ok(self.collection.drop().await?)
    }
}

fn decode(doc: &Document) -> Result<ResultDocument> {
    let id = doc
        .get("_id")
        .map(|v| bson_to_plain_json(v).to_string())
        .unwrap_or_default();
    ResultDocument::from_plain_json(bson_to_plain_json(&Bson::Document(doc.clone())))
        .map_err(|message| IngestError::CorruptDocument { id, message })
}

fn id_filter(id: &str) -> Document {
    match ObjectId::parse_str(id) {
        Ok(oid) => doc! {"_id": oid},
        Err(_) => doc! {"_id": id},
    }
}

#[async_trait]
impl ResultStore for MongoStore {
    fn kind(&self) -> &'static str {
        "mongodb"
    }

    async fn insert_result(&self, doc: &ResultDocument) -> Result<()> {
        self.collection.insert_one(doc.to_bson()).await?;
        Ok(())
    }

    async fn get_result(&self, id: &str) -> Result<Option<ResultDocument>> {
        match self.collection.find_one(id_filter(id)).await? {
            Some(doc) => Ok(Some(decode(&doc)?)),
            None => Ok(None),
        }
    }

    async fn list_results(&self, filter: &ResultFilter) -> Result<Vec<ResultDocument>> {
        let mut query = Document::new();
        if let Some(email) = &filter.email {
            query.insert("email", email);
        }
        if let Some(exam) = &filter.exam {
            query.insert("exam", exam);
        }
        let cursor = self
            .collection
            .find(query)
            .sort(doc! {"submitted_at": -1, "_id": -1})
            .limit(filter.limit as i64)
            .await?;
        let docs: Vec<Document> = cursor.try_collect().await?;
        docs.iter().map(decode).collect()
    }

    async fn ping(&self) -> Result<()> {
        self.client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await?;
        Ok(())
    }
}
