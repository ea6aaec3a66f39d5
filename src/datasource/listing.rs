//! Listing tables of BAM files: locations (files, directories, globs, also in URLs) to the files
//! they name, and one schema over all of them.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::Session;
use datafusion::common::plan_err;

use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::{DataFusionError, Result};
use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStore};

use crate::datasource::file_format::BamFormat;
use crate::error::BamError;
use crate::options::BamOptions;

/// A table location as a [`ListingTableUrl`]: a file, a directory, or a glob, also in URLs with
/// a scheme (`s3://bucket/runs/*.bam`; DataFusion's parser takes globs in local paths only). In
/// URLs, `*` and `[` start a glob (`?` starts the query part of a URL).
pub fn table_url(location: &str) -> Result<ListingTableUrl> {
    if location.trim().is_empty() {
        return plan_err!("a BAM location is empty: give a file, a directory or a glob");
    }
    let remote = url::Url::parse(location).is_ok_and(|u| u.scheme().len() > 1 && u.scheme() != "file");
    if let Some(glob_start) = location.find(['*', '[']).filter(|_| remote) {
        let split = location[..glob_start].rfind('/').map_or(0, |i| i + 1);
        let (base, pattern) = location.split_at(split);
        let base =
            url::Url::parse(base).map_err(|e| DataFusionError::Plan(format!("invalid location {location}: {e}")))?;
        let glob = glob::Pattern::new(pattern)
            .map_err(|e| DataFusionError::Plan(format!("invalid glob in {location}: {e}")))?;
        return ListingTableUrl::try_new(base, Some(glob));
    }
    ListingTableUrl::parse(location)
}

/// A location as its user would write it: a local path (with its glob), or the URL.
pub fn location_string(url: &ListingTableUrl) -> String {
    match (url.get_glob(), AsRef::<url::Url>::as_ref(url).to_file_path()) {
        (Some(glob), Ok(dir)) => format!("{}/{}", dir.display(), glob.as_str()),
        (None, Ok(path)) => path.display().to_string(),
        // A remote directory URL ends with `/`.
        (Some(glob), Err(_)) => format!("{}{}", url.as_str(), glob.as_str()),
        (None, Err(_)) => url.as_str().to_string(),
    }
}

/// A listing table of BAM files (a file, a directory or a glob).
pub async fn bam_listing_table(state: &dyn Session, path: &str, options: BamOptions) -> Result<Arc<ListingTable>> {
    bam_listing_table_of(state, &[path], options).await
}

/// A listing table of the BAM files at several locations (files, directories, globs; on one
/// object store), with one schema over all their files.
pub async fn bam_listing_table_of(
    state: &dyn Session,
    locations: &[&str],
    options: BamOptions,
) -> Result<Arc<ListingTable>> {
    let urls = locations.iter().map(|location| table_url(location)).collect::<Result<Vec<_>>>()?;
    let listing = bam_listing_options(&urls, options);
    Ok(Arc::new(listing_table(state, urls, listing).await?))
}

/// Whether `url` names one file, not a directory or a glob.
fn names_a_file(url: &ListingTableUrl) -> bool {
    !url.is_collection() && url.get_glob().is_none()
}

/// An error listing the files of `url`, naming the location (an object store's own error names
/// only the path in its bucket): a store's error as [`BamError::store`] makes it, or the likely
/// reason when it is an http(s) directory or glob: plain HTTP servers cannot list (object_store
/// lists through WebDAV).
pub fn listing_error(url: &ListingTableUrl, e: DataFusionError) -> DataFusionError {
    if names_a_file(url) || !url.scheme().starts_with("http") {
        // The store's own refusals stay typed (a missing object, denied credentials).
        return match e {
            DataFusionError::ObjectStore(source) => BamError::store(location_string(url), *source).into(),
            e => e.context(format!("BAM location {}", location_string(url))),
        };
    }
    DataFusionError::Plan(format!(
        "BAM location {}: cannot list it ({e}); an http(s) location must name a file, unless the server speaks WebDAV",
        location_string(url)
    ))
}

/// Listing options for alignment files at `urls`: directories and globs give the files of the
/// format's extension only
/// (indexes may sit beside them); files named one by one are read whatever their names.
pub fn bam_listing_options(urls: &[ListingTableUrl], options: BamOptions) -> ListingOptions {
    let extension =
        if urls.iter().all(names_a_file) { String::new() } else { format!(".{}", options.format.extension()) };
    let mut format = BamFormat::new(options);
    if let Some(url) = urls.first() {
        format = format.with_store_url(url.object_store());
    }
    ListingOptions::new(Arc::new(format)).with_file_extension(extension)
}

/// A listing table of the BAM files at `urls` (files, directories, globs; one object store),
/// its schema inferred from the headers of all of them together, so that files with different
/// tags share one table whether they are named one by one, in a directory or by a glob.
pub(crate) async fn listing_table(
    state: &dyn Session,
    urls: Vec<ListingTableUrl>,
    listing: ListingOptions,
) -> Result<ListingTable> {
    let Some(first) = urls.first() else {
        return plan_err!("a BAM table needs at least one location");
    };
    if let Some(i) = (1..urls.len()).find(|&i| urls[..i].contains(&urls[i])) {
        return plan_err!("BAM location {} is given twice", location_string(&urls[i]));
    }
    if let Some(other) = urls.iter().find(|url| url.object_store() != first.object_store()) {
        return plan_err!(
            "the locations of a BAM table must be on one object store, not on {} and {}",
            first.object_store().as_str(),
            other.object_store().as_str()
        );
    }
    let (store, files) = list_files(state, &urls, &listing).await?;
    let schema = listing.format.infer_schema(state, &store, &files).await?;
    let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(listing).with_schema(schema);
    ListingTable::try_new(config)
}

/// The store of `urls` (the first's: all share it) and the non-empty files at them, in listing
/// order; a location without files is an error naming it.
pub(crate) async fn list_files(
    state: &dyn Session,
    urls: &[ListingTableUrl],
    listing: &ListingOptions,
) -> Result<(Arc<dyn ObjectStore>, Vec<ObjectMeta>)> {
    let Some(first) = urls.first() else {
        return plan_err!("a BAM table needs at least one location");
    };
    let store = crate::io::store::object_store_for(state.runtime_env(), first, &HashMap::new()).await?;
    let ext = listing.format.get_ext();
    let kind = ext.to_uppercase();
    let mut files = Vec::new();
    for url in urls {
        let named_file = names_a_file(url);
        let found: Result<Vec<ObjectMeta>> =
            async { url.list_all_files(state, store.as_ref(), &listing.file_extension).await?.try_collect().await }
                .await;
        let found = found.map_err(|e| listing_error(url, e))?;
        let location = || location_string(url);
        match found.as_slice() {
            [] if named_file && listing.file_extension.is_empty() => {
                return Err(BamError::not_found(location(), None).into())
            }
            [] if named_file => {
                let reason =
                    format!("not found, or its name does not end in .{ext} (needed beside directories or globs)");
                return Err(BamError::NotFound { location: location(), detail: reason, source: None }.into());
            }
            [] => {
                let detail = format!("no .{ext} files there");
                return Err(BamError::NotFound { location: location(), detail, source: None }.into());
            }
            // DataFusion's listing skips zero-byte files; one named explicitly is an error instead.
            [file] if named_file && file.size == 0 => {
                return Err(BamError::damaged(location(), "", format!("the file is empty: not a {kind} file")).into())
            }
            _ => {}
        }
        files.extend(found.into_iter().filter(|file| file.size > 0));
    }
    Ok((store, files))
}

#[cfg(test)]
mod tests {
    use super::table_url;

    #[test]
    fn globs_in_urls_are_split_off() {
        let url = table_url("s3://bucket/runs/2024/*.bam").unwrap();
        assert_eq!(
            (url.scheme(), url.prefix().as_ref(), url.get_glob().as_ref().map(|g| g.as_str())),
            ("s3", "runs/2024", Some("*.bam"))
        );
        assert!(url.is_collection());
        let url = table_url("gs://bucket/lane[12]/x.bam").unwrap();
        assert_eq!((url.prefix().as_ref(), url.get_glob().as_ref().map(|g| g.as_str())), ("", Some("lane[12]/x.bam")));
        for plain in ["s3://bucket/runs/x.bam", "s3://bucket/runs/", "https://example.org/x.bam"] {
            assert!(table_url(plain).unwrap().get_glob().is_none(), "{plain}");
        }
        assert!(table_url("/data/*.bam").unwrap().get_glob().is_some(), "local globs as DataFusion parses them");
        assert!(table_url("s3://bucket/runs/[.bam").is_err(), "an invalid pattern is an error");
        assert!(table_url(" ").unwrap_err().to_string().contains("a BAM location is empty"));
    }
}
