//! One endpoint's background task: takes what is queued (several events
//! become one envelope), posts it, retries with backoff, and gives up after
//! the configured retries (counted and logged) so a dead endpoint cannot
//! hold the queue forever.

use crate::config::Settings;
use crate::event::{Envelope, Event, ENVELOPE_MEDIA_TYPE};
use crate::Stats;
use std::sync::Arc;
use tokio::sync::mpsc;

/// At most this many events go in one request.
const BATCH: usize = 64;

pub(crate) async fn run(
    client: reqwest::Client,
    settings: Settings,
    mut queue: mpsc::Receiver<Arc<Event>>,
    stats: Arc<Stats>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        stats.queued.dec_by(batch.len() as i64);
        let events: Vec<&Event> = batch.iter().map(|e| e.as_ref()).collect();
        let body = serde_json::to_vec(&Envelope { events: &events }).expect("events serialize");
        let mut backoff = settings.backoff;
        let mut attempt = 0;
        loop {
            match post(&client, &settings, body.clone()).await {
                Ok(()) => {
                    stats.sent.inc();
                    break;
                }
                Err(e) if attempt < settings.retries => {
                    tracing::debug!(endpoint = %settings.name, error = %e, attempt, "notification failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(60));
                    attempt += 1;
                }
                Err(e) => {
                    stats.failed.inc();
                    tracing::warn!(endpoint = %settings.name, error = %e, events = batch.len(),
                        attempts = attempt + 1, "notification given up");
                    break;
                }
            }
        }
        batch.clear();
    }
}

async fn post(client: &reqwest::Client, s: &Settings, body: Vec<u8>) -> Result<(), String> {
    let resp = client
        .post(s.url.clone())
        .headers(s.headers.clone())
        .header(reqwest::header::CONTENT_TYPE, ENVELOPE_MEDIA_TYPE)
        .timeout(s.timeout)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match resp.status() {
        s if s.is_success() => Ok(()),
        s => Err(format!("the endpoint answered {s}")),
    }
}
