//! A bucket on a local S3 emulator (moto: `scripts/s3-server start DIR`) for the harnesses
//! that compare the lake on S3 with the local lake: created with plain HTTP (moto accepts
//! unsigned requests), the storage options examflow needs, and a directory copied in.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use examflow_ingest::lake::LakeLocation;

/// moto ignores credentials and region, but object_store wants some.
const EMULATOR_OPTIONS: [(&str, &str); 4] = [
    ("allow_http", "true"),
    ("region", "us-east-1"),
    ("access_key_id", "test"),
    ("secret_access_key", "test"),
];

/// A new, empty bucket on the emulator at `endpoint`.
pub struct Bucket {
    pub endpoint: String,
    pub name: String,
}

impl Bucket {
    /// Creates a bucket named `<prefix>-<pid>-<nanos>`.
    pub fn create(endpoint: &str, prefix: &str) -> Result<Bucket> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("{prefix}-{}-{nanos}", std::process::id()).to_ascii_lowercase();
        let endpoint = endpoint.trim_end_matches('/').to_string();
        curl(&["-X", "PUT", &format!("{endpoint}/{name}")])
            .with_context(|| format!("creating bucket {name} at {endpoint}"))?;
        Ok(Bucket { endpoint, name })
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn uri(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.name)
    }

    /// The `[storage.lake_options]` for this emulator.
    pub fn options(&self) -> HashMap<String, String> {
        EMULATOR_OPTIONS
            .into_iter()
            .chain([("endpoint", self.endpoint.as_str())])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The same as `AWS_*` environment variables, for an `examflow` process.
    pub fn env(&self) -> Vec<(String, String)> {
        self.options()
            .into_iter()
            .map(|(k, v)| {
                let key = match k.as_str() {
                    "endpoint" => "AWS_ENDPOINT_URL".to_string(),
                    other => format!("AWS_{}", other.to_ascii_uppercase()),
                };
                (key, v)
            })
            .collect()
    }

    /// The lake at `s3://<bucket>/<prefix>`.
    pub fn lake(&self, prefix: &str) -> Result<LakeLocation> {
        Ok(LakeLocation::parse(&self.uri(prefix), &self.options())?)
    }

    /// Copies every file below `dir` to `<prefix>/<relative path>`; returns the bytes sent.
    pub fn upload_dir(&self, dir: &Path, prefix: &str) -> Result<u64> {
        let mut sent = 0;
        let mut pending = vec![dir.to_path_buf()];
        while let Some(current) = pending.pop() {
            for entry in std::fs::read_dir(&current)
                .with_context(|| format!("reading {}", current.display()))?
            {
                let path = entry?.path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
                curl(&[
                    "-T",
                    &path.to_string_lossy(),
                    &format!("{}/{}/{prefix}/{relative}", self.endpoint, self.name),
                ])
                .with_context(|| format!("uploading {}", path.display()))?;
                sent += std::fs::metadata(&path)?.len();
            }
        }
        Ok(sent)
    }
}

fn curl(args: &[&str]) -> Result<()> {
    let status = Command::new("curl")
        .args(["-fsS", "-o", "/dev/null"])
        .args(args)
        .status()
        .context("running curl")?;
    ensure!(status.success(), "curl {args:?} failed");
    Ok(())
}
