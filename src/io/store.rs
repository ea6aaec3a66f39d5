//! Object stores for remote BAM locations (`s3://`, `gs://`, `http(s)://`), built one way for
//! every door: `CREATE EXTERNAL TABLE ... OPTIONS ('aws.region' ...)` in the CLI and in Rust, the
//! Python package's `storage_options`, and locations given to Rust functions.
//!
//! The stores are object_store's own clients, configured by its builders from the environment
//! (`AWS_*`, `GOOGLE_*`) and then from the options, which win. An option is `aws.<key>`,
//! `gcp.<key>` or `http.<key>` (the namespaces datafusion-cli uses), or a bare `<key>` where the
//! location's scheme says which client it is for; `<key>` is any configuration key object_store
//! knows (`access_key_id`, `region`, `endpoint`, `allow_http`, `skip_signature`,
//! `service_account_key`, `timeout`, ...).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::aws::{resolve_bucket_region, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore};

/// The object store client a remote location needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    S3,
    Gcs,
    Http,
}

impl Client {
    fn of(scheme: &str) -> Option<Self> {
        match scheme {
            "s3" | "s3a" => Some(Self::S3),
            "gs" | "gcs" => Some(Self::Gcs),
            "http" | "https" => Some(Self::Http),
            _ => None,
        }
    }

    /// The namespace of this client's options, as datafusion-cli names them.
    fn namespace(self) -> &'static str {
        match self {
            Self::S3 => "aws",
            Self::Gcs => "gcp",
            Self::Http => "http",
        }
    }
}

/// The store options among a table's `OPTIONS`: those with a namespace other than `format.`.
pub fn store_options(options: &HashMap<String, String>) -> HashMap<String, String> {
    options
        .iter()
        .filter(|(key, _)| !crate::options::is_format_option(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The object store of `url`. A remote location given store options gets a new store, built from
/// the environment and those options and registered in `runtime` for its bucket or host (it
/// replaces the one there, as a new `CREATE EXTERNAL TABLE` does in datafusion-cli); without
/// options it gets the registered one, or a new one built from the environment. Other locations
/// (local files) get what `runtime` has.
pub async fn object_store_for(
    runtime: &RuntimeEnv,
    url: &ListingTableUrl,
    options: &HashMap<String, String>,
) -> Result<Arc<dyn ObjectStore>> {
    let Some(client) = Client::of(url.scheme()) else {
        return runtime.object_store(url);
    };
    if options.is_empty() {
        if let Ok(store) = runtime.object_store(url) {
            return Ok(store);
        }
    }
    let store = build(client, url, options).await.map_err(|e| {
        DataFusionError::Plan(format!("BAM location {}: cannot set up its {} store: {e}", url.as_str(), url.scheme()))
    })?;
    runtime.register_object_store(url.object_store().as_ref(), Arc::clone(&store));
    Ok(store)
}

/// What is wrong with a store option or the store.
#[derive(Debug)]
enum StoreError {
    /// An option of another client's namespace (`gcp.` for an `s3://` location).
    OtherNamespace {
        key: String,
        client: Client,
    },
    /// A key object_store does not know (the error names only the key, never a value).
    Unknown {
        key: String,
    },
    Build(object_store::Error),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OtherNamespace { key, client } => {
                write!(f, "option {key} is not for this location; its options are {}.<key>", client.namespace())
            }
            Self::Unknown { key } => write!(f, "unknown store option {key}"),
            Self::Build(e) => write!(f, "{e}"),
        }
    }
}

/// `(key as given, key without namespace)` of each option, checked against the client.
fn keys(client: Client, options: &HashMap<String, String>) -> Result<Vec<(&str, &str, &str)>, StoreError> {
    let mut keys = Vec::new();
    for (key, value) in options {
        let bare = match key.split_once('.') {
            Some((namespace, bare)) if namespace == client.namespace() => bare,
            Some(_) => return Err(StoreError::OtherNamespace { key: key.clone(), client }),
            None => key.as_str(),
        };
        keys.push((key.as_str(), bare, value.as_str()));
    }
    // The same keys in the same order give the same store, whatever the map's order.
    keys.sort_unstable();
    Ok(keys)
}

async fn build(
    client: Client,
    url: &ListingTableUrl,
    options: &HashMap<String, String>,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let unknown = |key: &str| StoreError::Unknown { key: key.to_string() };
    let keys = keys(client, options)?;
    Ok(match client {
        Client::S3 => {
            let mut builder = AmazonS3Builder::from_env().with_url(url.as_str());
            for (key, bare, value) in keys {
                builder = builder.with_config(bare.parse::<AmazonS3ConfigKey>().map_err(|_| unknown(key))?, value);
            }
            // As datafusion-cli does: a bucket's region found from AWS itself when nothing gives
            // one (a custom endpoint, such as MinIO's, has no such lookup).
            let (region, endpoint) = (AmazonS3ConfigKey::Region, AmazonS3ConfigKey::Endpoint);
            if builder.get_config_value(&region).is_none() && builder.get_config_value(&endpoint).is_none() {
                if let Some(bucket) = url.get_url().host_str() {
                    let found =
                        resolve_bucket_region(bucket, &ClientOptions::new()).await.map_err(StoreError::Build)?;
                    builder = builder.with_region(found);
                }
            }
            Arc::new(builder.build().map_err(StoreError::Build)?)
        }
        Client::Gcs => {
            let mut builder = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (key, bare, value) in keys {
                // datafusion-cli's name for object_store's `application_credentials`.
                let bare = if bare == "application_credentials_path" { "application_credentials" } else { bare };
                builder = builder.with_config(bare.parse::<GoogleConfigKey>().map_err(|_| unknown(key))?, value);
            }
            Arc::new(builder.build().map_err(StoreError::Build)?)
        }
        Client::Http => {
            // Plain http too, as datafusion-cli allows it (object_store refuses it by default).
            let mut client_options = ClientOptions::new().with_allow_http(true);
            for (key, bare, value) in keys {
                client_options =
                    client_options.with_config(bare.parse::<ClientConfigKey>().map_err(|_| unknown(key))?, value);
            }
            let origin = url.get_url().origin().ascii_serialization();
            Arc::new(
                HttpBuilder::new()
                    .with_url(origin)
                    .with_client_options(client_options)
                    .build()
                    .map_err(StoreError::Build)?,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[tokio::test]
    async fn options_configure_the_client_of_the_scheme() {
        let runtime = RuntimeEnv::default();
        let url = ListingTableUrl::parse("s3://bucket/x.bam").unwrap();
        let given =
            options(&[("aws.region", "eu-west-1"), ("endpoint", "http://127.0.0.1:9"), ("aws.allow_http", "true")]);
        object_store_for(&runtime, &url, &given).await.unwrap();
        assert!(runtime.object_store(&url).is_ok(), "the store is registered for the bucket");

        let gcp = options(&[("gcp.region", "x")]);
        let err = object_store_for(&runtime, &url, &gcp).await.unwrap_err().to_string();
        assert!(err.contains("BAM location s3://bucket/x.bam: cannot set up its s3 store: option gcp.region is not for this location"), "{err}");
        let secret = options(&[("aws.no_such_key", "secret-value")]);
        let err = object_store_for(&runtime, &url, &secret).await.unwrap_err().to_string();
        assert!(err.contains("unknown store option aws.no_such_key") && !err.contains("secret-value"), "{err}");

        let http = ListingTableUrl::parse("http://127.0.0.1:9/b/x.bam").unwrap();
        object_store_for(&runtime, &http, &options(&[("timeout", "5s")])).await.unwrap();
        let err = object_store_for(&runtime, &http, &options(&[("http.nonsense", "1")])).await.unwrap_err();
        assert!(err.to_string().contains("unknown store option http.nonsense"), "{err}");
    }

    #[test]
    fn format_options_are_not_store_options() {
        let all =
            options(&[("format.tags", "NM"), ("tags", "NM"), ("aws.region", "x"), ("gcp.service_account_key", "{}")]);
        let mut keys: Vec<String> = store_options(&all).into_keys().collect();
        keys.sort();
        assert_eq!(keys, ["aws.region", "gcp.service_account_key"]);
    }
}
