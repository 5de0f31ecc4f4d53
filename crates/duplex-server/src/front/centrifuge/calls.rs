//! Hub calls answered as [`Reply`] values, shared by the client protocol
//! (in either encoding) and the server API (which answers `presence`,
//! `presence_stats` and `history` alike, in JSON).

use super::reply::Reply;
use super::wire::{self, HistoryRequest, ProtoError};
use crate::hub::{Hub, HubError, StreamPosition};

/// The protocol error for a hub error.
pub fn hub_error(e: &HubError) -> ProtoError {
    match e {
        HubError::UnknownChannel => wire::UNKNOWN_CHANNEL,
        HubError::BadChannel => wire::BAD_REQUEST,
        HubError::NotAvailable => wire::NOT_AVAILABLE,
        HubError::AlreadySubscribed => wire::ALREADY_SUBSCRIBED,
        HubError::LimitExceeded | HubError::TooLarge => wire::LIMIT_EXCEEDED,
        HubError::Broker(_) => wire::UNAVAILABLE,
    }
}

/// The channel's members.
pub async fn presence(hub: &Hub, channel: &str) -> Result<Reply, ProtoError> {
    let members = hub.presence(channel).await.map_err(|e| hub_error(&e))?;
    Ok(Reply::Presence(members))
}

/// Clients and distinct users in the channel.
pub async fn presence_stats(hub: &Hub, channel: &str) -> Result<Reply, ProtoError> {
    let (clients, users) = hub
        .presence_stats(channel)
        .await
        .map_err(|e| hub_error(&e))?;
    Ok(Reply::PresenceStats { clients, users })
}

/// Publications and the stream's position. `limit` 0: the position only;
/// negative: all (up to `max_history_per_call`); `since` in another
/// (non-empty) epoch: 112; `since` with `reverse` from offset 0: 107.
pub async fn history(hub: &Hub, r: &HistoryRequest) -> Result<Reply, ProtoError> {
    let max = hub.config().max_history_per_call;
    let limit = match r.limit {
        l if l < 0 => max,
        l => (l as usize).min(max),
    };
    if r.reverse && r.since.as_ref().is_some_and(|s| s.offset == 0) {
        return Err(wire::BAD_REQUEST);
    }
    let since = r.since.as_ref().map(|s| StreamPosition {
        offset: s.offset,
        epoch: s.epoch.as_str().into(),
    });
    let h = hub
        .history(&r.channel, since.clone(), limit, r.reverse)
        .await
        .map_err(|e| hub_error(&e))?;
    if let Some(s) = &since {
        if !s.epoch.is_empty() && s.epoch != h.position.epoch {
            return Err(wire::UNRECOVERABLE_POSITION);
        }
    }
    Ok(Reply::History(h))
}
