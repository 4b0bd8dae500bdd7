//! ADD's URLs fetched with the registry client's HTTP stack (its CAs, certs.d,
//! `--insecure` hosts, proxies and timeouts).

use builder::exec::fetch::{Fetch, FetchError, FetchRequest, FetchResponse};
use registry_client::http::Fetcher;

pub struct HttpFetch(pub Fetcher);

impl Fetch for HttpFetch {
    fn get(&self, req: &FetchRequest<'_>) -> Result<FetchResponse, FetchError> {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(v) = req.if_none_match {
            headers.push(("if-none-match", v));
        }
        if let Some(v) = req.if_modified_since {
            headers.push(("if-modified-since", v));
        }
        let got = self
            .0
            .get(req.url, req.basic_auth, &headers)
            .map_err(|e| FetchError(e.to_string()))?;
        let header = |name: &str| got.header(name).map(str::to_string);
        let (etag, last_modified, content_disposition) = (
            header("etag"),
            header("last-modified"),
            header("content-disposition"),
        );
        Ok(FetchResponse {
            status: got.status,
            etag,
            last_modified,
            content_disposition,
            final_url: got.url,
            body: got.body,
        })
    }
}
