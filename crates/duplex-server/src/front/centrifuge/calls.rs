//! Hub calls answered in the Centrifugo JSON shapes, shared by the client
//! protocol and the server API (which answer `presence`, `presence_stats`
//! and `history` alike).

use super::wire::{self, HistoryRequest, ProtoError};
use crate::hub::{Hub, HubError, StreamPosition};
use std::fmt::Write;

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

/// `{"presence":{CLIENT:{client,user,conn_info?,chan_info?},...}}`
pub async fn presence(hub: &Hub, channel: &str) -> Result<String, ProtoError> {
    let members = hub.presence(channel).await.map_err(|e| hub_error(&e))?;
    let mut out = String::from("{\"presence\":{");
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        wire::string(&mut out, &m.client);
        out.push(':');
        wire::client_info(&mut out, m);
    }
    out.push_str("}}");
    Ok(out)
}

/// `{"num_clients":N,"num_users":N}`
pub async fn presence_stats(hub: &Hub, channel: &str) -> Result<String, ProtoError> {
    let (clients, users) = hub
        .presence_stats(channel)
        .await
        .map_err(|e| hub_error(&e))?;
    Ok(format!(
        "{{\"num_clients\":{clients},\"num_users\":{users}}}"
    ))
}

/// `{"publications":[...],"offset":N,"epoch":"..."}`. `limit` 0: the
/// position only; negative: all (up to `max_history_per_call`); `since`
/// in another (non-empty) epoch: 112; `since` with `reverse` from offset 0:
/// 107.
pub async fn history(hub: &Hub, r: &HistoryRequest) -> Result<String, ProtoError> {
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
    let mut out = String::from("{\"publications\":");
    wire::publications(&mut out, &h.publications);
    let _ = write!(out, ",\"offset\":{},\"epoch\":", h.position.offset);
    wire::string(&mut out, &h.position.epoch);
    out.push('}');
    Ok(out)
}
