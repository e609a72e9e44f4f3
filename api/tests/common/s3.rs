//! An S3 lake for the tests: a bucket of its own on the S3-compatible server that
//! `scripts/test-all` starts (moto; `EXAMFLOW_TEST_S3_ENDPOINT`).
#![allow(dead_code)]

use std::process::Command;

use super::unique;

const ENDPOINT_VAR: &str = "EXAMFLOW_TEST_S3_ENDPOINT";

/// A fresh bucket and the settings that point examflow at it.
pub struct S3Lake {
    pub endpoint: String,
    pub bucket: String,
    /// `s3://BUCKET/lake`
    pub uri: String,
}

impl S3Lake {
    /// A new bucket, or `None` (with a notice) when no S3 server was started for the tests.
    pub fn new(test: &str) -> Option<S3Lake> {
        let Ok(endpoint) = std::env::var(ENDPOINT_VAR) else {
            eprintln!(
                "\n*** SKIPPED: S3 test {test}: {ENDPOINT_VAR} is not set (run scripts/test-all, \
                 which starts scripts/s3-server) ***\n"
            );
            return None;
        };
        let bucket = unique("lake").to_ascii_lowercase().replace('_', "-");
        // moto takes an unsigned request; a real S3 would want a signature.
        let status = Command::new("curl")
            .args(["-fsS", "-o", "/dev/null", "-X", "PUT"])
            .arg(format!("{endpoint}/{bucket}"))
            .status()
            .expect("running curl");
        assert!(status.success(), "creating bucket {bucket} at {endpoint}");
        Some(S3Lake {
            uri: format!("s3://{bucket}/lake"),
            endpoint,
            bucket,
        })
    }

    /// `[storage.lake_options]` for the emulator (it ignores keys and region, object_store
    /// wants some).
    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("endpoint", self.endpoint.clone()),
            ("allow_http", "true".into()),
            ("region", "us-east-1".into()),
            ("access_key_id", "test".into()),
            ("secret_access_key", "test".into()),
        ]
    }

    /// `[storage]` lines of an `examflow.toml` that put the lake in this bucket.
    pub fn config(&self) -> String {
        let options: String = self
            .options()
            .iter()
            .map(|(k, v)| format!("{k} = \"{v}\"\n"))
            .collect();
        format!(
            "[storage]\nlake_uri = \"{}\"\n\n[storage.lake_options]\n{options}\n",
            self.uri
        )
    }

    /// The same lake for opening it in the test process.
    pub fn location(&self) -> examflow_ingest::lake::LakeLocation {
        let options = self
            .options()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        examflow_ingest::lake::LakeLocation::parse(&self.uri, &options).unwrap()
    }

    /// Keys of the objects below `prefix` in the bucket (first 1000).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = Command::new("curl")
            .arg("-fsS")
            .arg(format!(
                "{}/{}?list-type=2&prefix={prefix}",
                self.endpoint, self.bucket
            ))
            .output()
            .expect("running curl");
        assert!(out.status.success(), "listing {}", self.bucket);
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_string()))
            .collect()
    }
}
