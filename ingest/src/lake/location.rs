//! Where the lake lives: a local directory (the embedded default) or a prefix in
//! S3-compatible object storage (`s3://bucket/prefix`), shared by every server and ingest.
//!
//! On S3, every object is written whole or not at all, and a Delta log entry is created
//! with a conditional put (`If-None-Match: *`, object_store's `PutMode::Create`): of two
//! writers committing the same version, one wins and the other gets "already exists" and
//! retries against the winner. So there is no external lock service, no fsync and no torn
//! entry to set aside; the local-disk durability of [`super::durable`] applies to local
//! lakes only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use deltalake::DeltaResult;
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{IngestError, Result};

/// URL schemes that mean S3 (`s3a` is Hadoop's and Spark's spelling).
const S3_SCHEMES: [&str; 2] = ["s3", "s3a"];

/// The lake's root.
#[derive(Clone, Debug, PartialEq)]
pub enum LakeLocation {
    /// An absolute directory; tables are its subdirectories.
    Local(PathBuf),
    /// A prefix in object storage, with the options its store is built with (keys of
    /// object_store's `AmazonS3ConfigKey`, e.g. `endpoint`, `region`, `allow_http`; the
    /// `AWS_*` environment fills in the rest).
    ObjectStore {
        /// Always ends with `/`.
        url: Url,
        options: HashMap<String, String>,
    },
}

impl LakeLocation {
    /// The default lake of a data directory: `<data_dir>/lake`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        let root = data_dir.join("lake");
        LakeLocation::Local(std::path::absolute(&root).unwrap_or(root))
    }

    /// Parses `storage.lake_uri`: `s3://bucket/prefix` (or `s3a://`), `file:///dir`, or a
    /// plain path. Unknown schemes and options are refused here, before anything is opened.
    pub fn parse(uri: &str, options: &HashMap<String, String>) -> Result<Self> {
        let uri = uri.trim();
        if uri.is_empty() {
            return Err(IngestError::LakeSetup("the lake URI is empty".into()));
        }
        let url = match Url::parse(uri) {
            Ok(url) if url.scheme().len() > 1 => url,
            // No scheme (or a Windows drive letter): a path.
            _ => {
                let path = PathBuf::from(uri);
                return Ok(LakeLocation::Local(
                    std::path::absolute(&path).unwrap_or(path),
                ));
            }
        };
        match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| IngestError::LakeSetup(format!("{uri}: not a local file URL")))?;
                Ok(LakeLocation::Local(path))
            }
            scheme if S3_SCHEMES.contains(&scheme) => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(IngestError::LakeSetup(format!(
                        "{uri}: an S3 lake URI names a bucket: s3://bucket/prefix"
                    )));
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(IngestError::LakeSetup(format!(
                        "{uri}: put S3 settings in [storage.lake_options], not in the URI"
                    )));
                }
                for key in options.keys() {
                    parse_option_key(key)?;
                }
                let mut url = url;
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                Ok(LakeLocation::ObjectStore {
                    url,
                    options: options.clone(),
                })
            }
            other => Err(IngestError::LakeSetup(format!(
                "{uri}: lake URIs are a local path, file:// or s3://, not {other}://"
            ))),
        }
    }

    /// Where a table lives: its URL (ending with `/`), and its directory when local.
    pub fn table(&self, name: &str) -> Result<TableLocation> {
        match self {
            LakeLocation::Local(root) => TableLocation::local(&root.join(name)),
            LakeLocation::ObjectStore { url, options } => {
                register_object_store_handlers();
                let url = url
                    .join(&format!("{name}/"))
                    .map_err(|e| IngestError::LakeSetup(format!("{url}{name}: {e}")))?;
                Ok(TableLocation {
                    url,
                    dir: None,
                    options: options.clone(),
                })
            }
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, LakeLocation::Local(_))
    }

    /// The location as users write it (a path, or the URL).
    pub fn display(&self) -> String {
        match self {
            LakeLocation::Local(root) => root.display().to_string(),
            LakeLocation::ObjectStore { url, .. } => url.to_string(),
        }
    }

    /// Reads a small object below the root (`_abilities/snapshot.bin`); `None` when absent.
    pub async fn read(&self, relative: &str) -> Result<Option<Vec<u8>>> {
        match self {
            LakeLocation::Local(root) => {
                let path = root.join(relative);
                tokio::task::spawn_blocking(move || match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(IngestError::LakeSetup(format!("{}: {e}", path.display()))),
                })
                .await
                .map_err(|e| IngestError::Task(e.to_string()))?
            }
            LakeLocation::ObjectStore { url, options } => {
                let (store, path) = s3_store_at(url, options, relative)?;
                match store.get(&path).await {
                    Ok(got) => Ok(Some(got.bytes().await.map_err(object_error(url))?.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(object_error(url)(e)),
                }
            }
        }
    }

    /// Replaces a small object below the root whole: a renamed, fsynced temporary file
    /// locally; one put (atomic) on S3.
    pub async fn write(&self, relative: &str, bytes: Vec<u8>) -> Result<()> {
        match self {
            LakeLocation::Local(root) => {
                let path = root.join(relative);
                tokio::task::spawn_blocking(move || {
                    super::write_ability_snapshot(&path, &bytes)
                        .map_err(|e| IngestError::LakeSetup(format!("{}: {e}", path.display())))
                })
                .await
                .map_err(|e| IngestError::Task(e.to_string()))?
            }
            LakeLocation::ObjectStore { url, options } => {
                let (store, path) = s3_store_at(url, options, relative)?;
                store
                    .put(&path, bytes.into())
                    .await
                    .map_err(object_error(url))?;
                Ok(())
            }
        }
    }

    /// Whether the lake answers (for `/readyz`): the root directory exists locally; a list
    /// request below the prefix succeeds on S3.
    pub async fn check(&self) -> Result<()> {
        match self {
            LakeLocation::Local(root) => {
                if root.is_dir() {
                    Ok(())
                } else {
                    Err(IngestError::LakeSetup(format!(
                        "{} is not a directory",
                        root.display()
                    )))
                }
            }
            LakeLocation::ObjectStore { url, options } => {
                use futures::StreamExt;
                let (store, prefix) = s3_store_at(url, options, "")?;
                let mut listing = store.list(Some(&prefix));
                match listing.next().await {
                    None | Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => Err(object_error(url)(e)),
                }
            }
        }
    }

    /// The store and bucket URL DataFusion reads the tables' files through (S3 only).
    pub fn object_store(&self) -> Result<Option<(Url, Arc<dyn ObjectStore>)>> {
        match self {
            LakeLocation::Local(_) => Ok(None),
            LakeLocation::ObjectStore { url, options } => {
                let (store, _) = s3_store_at(url, options, "")?;
                Ok(Some((bucket_url(url), store)))
            }
        }
    }
}

/// One table's place.
#[derive(Clone, Debug)]
pub struct TableLocation {
    pub url: Url,
    /// The directory, for a local table (fsync, torn entries).
    pub dir: Option<PathBuf>,
    /// Storage options deltalake builds the table's store with.
    pub options: HashMap<String, String>,
}

impl TableLocation {
    /// A table in a local directory.
    pub fn local(dir: &Path) -> Result<Self> {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let url = Url::from_directory_path(&dir).map_err(|()| {
            IngestError::LakeSetup(format!(
                "{} is not an absolute directory path",
                dir.display()
            ))
        })?;
        Ok(TableLocation {
            url,
            dir: Some(dir),
            options: HashMap::new(),
        })
    }
}

fn parse_option_key(key: &str) -> Result<AmazonS3ConfigKey> {
    key.to_ascii_lowercase().parse().map_err(|_| {
        IngestError::LakeSetup(format!(
            "[storage.lake_options] {key}: not an S3 setting (e.g. endpoint, region, \
             allow_http, access_key_id, secret_access_key)"
        ))
    })
}

fn object_error(url: &Url) -> impl Fn(object_store::Error) -> IngestError + '_ {
    move |e| IngestError::LakeSetup(format!("{url}: {}", short_store_error(&e.to_string())))
}

/// An S3 error without the XML body object_store repeats in it: the error code and
/// message when the body has them (`NoSuchBucket: The specified bucket does not exist`).
fn short_store_error(text: &str) -> String {
    let between = |open: &str, close: &str| {
        let start = text.find(open)? + open.len();
        let end = text[start..].find(close)? + start;
        Some(text[start..end].to_string())
    };
    match (
        between("<Code>", "</Code>"),
        between("<Message>", "</Message>"),
    ) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => text.lines().next().unwrap_or_default().to_string(),
    }
}

/// `s3://bucket/` of a URL below it.
fn bucket_url(url: &Url) -> Url {
    let mut bucket = url.clone();
    bucket.set_path("/");
    bucket
}

/// An S3 store for the bucket of `url` (from the `AWS_*` environment, then `options`), and
/// the path of `relative` below the URL's prefix.
fn s3_store_at(
    url: &Url,
    options: &HashMap<String, String>,
    relative: &str,
) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    let store = build_s3(url, options).map_err(object_error(url))?;
    let full = format!("{}{relative}", url.path().trim_start_matches('/'));
    let path = ObjectPath::parse(full.trim_end_matches('/'))
        .map_err(|e| IngestError::LakeSetup(format!("{url}{relative}: {e}")))?;
    Ok((Arc::new(store), path))
}

fn build_s3(
    url: &Url,
    options: &HashMap<String, String>,
) -> object_store::Result<object_store::aws::AmazonS3> {
    let mut builder = AmazonS3Builder::from_env().with_url(bucket_url(url).as_str());
    for (key, value) in options {
        let key = key
            .to_ascii_lowercase()
            .parse::<AmazonS3ConfigKey>()
            .map_err(|_| object_store::Error::UnknownConfigurationKey {
                store: "S3",
                key: key.clone(),
            })?;
        builder = builder.with_config(key, value);
    }
    builder.build()
}

/// deltalake's hook for `s3://` URLs: object_store's S3 client (conditional puts for the
/// log), without deltalake's AWS SDK integration and its build cost.
struct S3StoreFactory;

impl ObjectStoreFactory for S3StoreFactory {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, ObjectPath)> {
        let store = build_s3(url, &config.raw)?;
        let path = ObjectPath::from_url_path(url.path())?;
        Ok((Arc::new(store), path))
    }
}

/// Delta's default log store: commits with put-if-absent, which object_store's S3 client
/// does with `If-None-Match: *`.
struct PutIfAbsentLogStoreFactory;

impl LogStoreFactory for PutIfAbsentLogStoreFactory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Teaches deltalake the `s3://` and `s3a://` schemes (once per process).
pub fn register_object_store_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in S3_SCHEMES {
            let url = Url::parse(&format!("{scheme}://")).expect("static URL");
            object_store_factories().insert(url.clone(), Arc::new(S3StoreFactory));
            logstore_factories().insert(url, Arc::new(PutIfAbsentLogStoreFactory));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_options() -> HashMap<String, String> {
        HashMap::new()
    }

    #[test]
    fn paths_and_file_urls_are_local_lakes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        assert_eq!(
            LakeLocation::parse(path, &no_options()).unwrap(),
            LakeLocation::Local(dir.path().to_path_buf())
        );
        assert_eq!(
            LakeLocation::parse(&format!("file://{path}"), &no_options()).unwrap(),
            LakeLocation::Local(dir.path().to_path_buf())
        );
        let relative = LakeLocation::parse("some/lake", &no_options()).unwrap();
        let LakeLocation::Local(root) = relative else {
            panic!("{relative:?}")
        };
        assert!(root.is_absolute() && root.ends_with("some/lake"));
        let table = LakeLocation::Local(dir.path().to_path_buf())
            .table("attempts")
            .unwrap();
        assert_eq!(
            table.dir.as_deref(),
            Some(dir.path().join("attempts").as_path())
        );
        assert!(table.url.as_str().ends_with("/attempts/"));
    }

    #[test]
    fn s3_uris_name_a_bucket_and_get_a_trailing_slash() {
        let mut options = HashMap::new();
        options.insert("endpoint".to_string(), "http://127.0.0.1:9000".to_string());
        options.insert("ALLOW_HTTP".to_string(), "true".to_string());
        let lake = LakeLocation::parse("s3://exams/lake", &options).unwrap();
        let LakeLocation::ObjectStore { url, .. } = &lake else {
            panic!("{lake:?}")
        };
        assert_eq!(url.as_str(), "s3://exams/lake/");
        let table = lake.table("scores").unwrap();
        assert_eq!(table.url.as_str(), "s3://exams/lake/scores/");
        assert!(table.dir.is_none());
        let bucket_root = LakeLocation::parse("s3a://exams", &no_options()).unwrap();
        assert_eq!(
            bucket_root.table("attempts").unwrap().url.as_str(),
            "s3a://exams/attempts/"
        );
    }

    #[test]
    fn bad_uris_and_options_are_refused_with_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("s3:///lake", "names a bucket"),
            ("s3://bucket/lake?region=x", "lake_options"),
            ("gs://bucket/lake", "not gs://"),
            ("http://example.com/lake", "not http://"),
        ];
        for (uri, expected) in cases {
            let e = LakeLocation::parse(uri, &no_options())
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{uri}: {e}");
        }
        let mut options = HashMap::new();
        options.insert("endpiont".to_string(), "http://x".to_string());
        let e = LakeLocation::parse("s3://bucket/lake", &options)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("endpiont") && e.contains("not an S3 setting"),
            "{e}"
        );
    }

    #[test]
    fn store_errors_keep_the_code_and_message() {
        let text = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The \
                    specified bucket does not exist</Message></Error>: Generic S3 error: \
                    <Error><Code>NoSuchBucket</Code></Error>";
        assert_eq!(
            short_store_error(text),
            "NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(
            short_store_error("connection refused\nmore"),
            "connection refused"
        );
    }

    #[tokio::test]
    async fn a_local_lake_reads_and_replaces_small_objects() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeLocation::Local(dir.path().join("lake"));
        assert!(lake.check().await.is_err(), "no directory yet");
        assert_eq!(lake.read("_abilities/snapshot.bin").await.unwrap(), None);
        lake.write("_abilities/snapshot.bin", b"one".to_vec())
            .await
            .unwrap();
        lake.write("_abilities/snapshot.bin", b"two".to_vec())
            .await
            .unwrap();
        assert_eq!(
            lake.read("_abilities/snapshot.bin")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"two"[..])
        );
        lake.check().await.unwrap();
    }
}
