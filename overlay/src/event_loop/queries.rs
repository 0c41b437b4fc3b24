//! Answering commands from the progress events of the kad queries they started.

use std::time::Duration;

use libp2p::{
    PeerId,
    kad::{self, QueryId, QueryResult},
};
use tracing::debug;

use super::EventLoop;
use crate::Error;
use crate::client::{LookupStats, ProvidersFound};
use crate::metrics::PROVIDERS_LOOKUP;

impl EventLoop {
    pub(super) fn on_query_progress(
        &mut self,
        id: QueryId,
        result: QueryResult,
        step: kad::ProgressStep,
        stats: kad::QueryStats,
    ) {
        match result {
            QueryResult::Bootstrap(result) => {
                if let Err(error) = &result {
                    debug!(query = ?id, %error, "kad bootstrap step failed");
                }
                self.on_bootstrap_progress(id, step.last);
            }
            QueryResult::StartProviding(result) => {
                if let Some(reply) = self.pending_provide.remove(&id) {
                    let _ = reply.send(result.map(|_| ()).map_err(|e| Error::Query(e.to_string())));
                } else if self.announcing.remove(&id) {
                    if let Err(error) = result {
                        debug!(%error, "announcing a key again failed");
                    }
                    self.announce_next();
                }
            }
            QueryResult::RepublishProvider(Err(error)) => {
                debug!(%error, "provider republish failed")
            }
            QueryResult::GetProviders(result) => {
                if let Some(query) = self.pending_providers.get_mut(&id) {
                    query.stats = Some(LookupStats::of(&stats));
                }
                self.on_providers(id, result, step.last)
            }
            QueryResult::GetRecord(result) => self.on_get_record(id, result, step.last),
            QueryResult::PutRecord(result) if self.record_put_query == Some(id) => {
                self.on_own_record_put(&result);
            }
            QueryResult::PutRecord(result) => {
                if !self.on_put_record(id, &result)
                    && let Err(error) = result
                {
                    // Bringing stale replicas up to date (see `finish_get`): best effort.
                    debug!(%error, "record update failed");
                }
            }
            QueryResult::RepublishRecord(Err(error)) => debug!(%error, "record republish failed"),
            _ => {}
        }
    }

    pub(super) fn on_providers(
        &mut self,
        id: QueryId,
        result: kad::GetProvidersResult,
        last: bool,
    ) {
        let Some(query) = self.pending_providers.get_mut(&id) else {
            return;
        };
        let done = match result {
            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                let local = self.local;
                query
                    .found
                    .extend(providers.into_iter().filter(|p| *p != local));
                query.found.len() >= query.limit
            }
            Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => true,
            Err(error) => {
                debug!(key = %query.key.short(), %error, "provider lookup ended early");
                true
            }
        };
        if done || last {
            self.finish_providers(id);
        }
    }

    pub(super) fn finish_providers(&mut self, id: QueryId) {
        let Some(query) = self.pending_providers.remove(&id) else {
            return;
        };
        // A lookup ended by its deadline has reported no progress with stats yet.
        let stats = query.stats.unwrap_or_else(|| {
            self.swarm
                .behaviour_mut()
                .kad
                .query(&id)
                .map(|q| LookupStats::of(q.stats()))
                .unwrap_or_default()
        });
        self.stop_query(id);
        self.metrics
            .lookup_took(PROVIDERS_LOOKUP, query.started.elapsed());
        let holders: Vec<(PeerId, Option<Duration>)> = query
            .found
            .into_iter()
            .take(query.limit)
            .map(|p| (p, self.rtt.get(&p).copied()))
            .collect();
        debug!(key = %query.key.short(), holders = holders.len(), requests = stats.requests, "provider lookup done");
        let _ = query.reply.send(Ok(ProvidersFound { holders, stats }));
    }
}
