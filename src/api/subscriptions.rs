//! Durable named subscriptions: WatchStateChanges with a `subscription`,
//! AcknowledgeStateChanges, ListSubscriptions and DeleteSubscription.
//!
//! A watch naming a subscription costs one indexed read more than a plain
//! one (the subscription, with the log's pruning mark); the first watch
//! naming it creates it with the request's filters and start (one
//! transaction). Acknowledging is one statement, deleting too (it notifies
//! every replica's listener, which ends the subscription's streams).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::{
    EncodedStream, paging, requests::Violations, service::InvoiceCaseApi, service::read_timeout,
    status,
};
use crate::{
    auth::{Caller, Permission},
    convert,
    domain::values::quote,
    pb,
    store::{Creation, NewSubscription, Subscription, SubscriptionError},
    watch::{WatchError, WatchSpec, cursor},
};

/// Longest subscription name.
const MAX_NAME: usize = 64;
/// Subscriptions per page when the request says 0.
const DEFAULT_PAGE: usize = 50;
/// Most subscriptions per page.
const MAX_PAGE: usize = 500;
/// The kind byte of a ListSubscriptions page token (cases' tokens are 1,
/// events' 2).
const PAGE_TOKEN: u8 = 3;

/// A subscription name: 1-64 letters, digits, `-`, `_`, `.`.
pub fn name(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("is required (1-64 letters, digits, `-`, `_` or `.`)".into());
    }
    if text.chars().count() > MAX_NAME {
        return Err(format!("is longer than {MAX_NAME} characters"));
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "may hold only letters, digits, `-`, `_` and `.`, not {}",
            quote(text)
        ));
    }
    Ok(text.to_owned())
}

/// The filters and start a watch request gives, by field name: a watch of
/// an existing subscription may give none of them.
pub fn fixed_fields(request: &pb::WatchStateChangesRequest) -> Vec<&'static str> {
    use pb::watch_state_changes_request::Start;
    let mut given = Vec::new();
    if !request.case_id.is_empty() {
        given.push("case_id");
    }
    if !request.account_id.is_empty() {
        given.push("account_id");
    }
    match &request.start {
        None => {}
        Some(Start::AfterCursor(_)) => given.push("after_cursor"),
        Some(Start::FromBeginning(_)) => given.push("from_beginning"),
        Some(Start::WithSnapshot(_)) => given.push("with_snapshot"),
        Some(Start::FromNow(_)) => given.push("from_now"),
    }
    given
}

/// INVALID_ARGUMENT naming each field given to a watch of an existing
/// subscription.
fn fixed_at_creation(fields: &[&'static str]) -> Status {
    status::invalid_argument(
        fields
            .iter()
            .map(|field| crate::domain::Violation {
                field: (*field).to_owned(),
                description: "is fixed when the subscription is created: watch an existing \
                              subscription by its name alone"
                    .into(),
            })
            .collect(),
    )
}

/// A subscription as the API shows it.
fn message(subscription: Subscription) -> pb::Subscription {
    pb::Subscription {
        acknowledged_cursor: match subscription.acknowledge_time {
            Some(_) => cursor::encode(&subscription.position),
            None => String::new(),
        },
        name: subscription.name,
        owner: subscription.owner,
        case_id: subscription
            .case_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        account_id: subscription.account_id.unwrap_or_default(),
        create_time: Some(convert::timestamp(subscription.create_time)),
        acknowledge_time: subscription.acknowledge_time.map(convert::timestamp),
    }
}

/// The token of the page after the subscription `name`.
fn page_token(name: &str) -> String {
    let mut bytes = vec![PAGE_TOKEN];
    bytes.extend_from_slice(name.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads a token of [`page_token`].
fn parse_page_token(token: &str) -> Result<Option<String>, String> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || "is not a page token of this service".to_owned();
    if token.len() > 128 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    match bytes.split_first() {
        Some((&PAGE_TOKEN, rest)) => {
            let text = std::str::from_utf8(rest).map_err(|_| invalid())?;
            name(text).map(Some).map_err(|_| invalid())
        }
        _ => Err(invalid()),
    }
}

/// A stream's messages as the server sends them.
fn encoded(stream: crate::watch::WatchEvents) -> Response<EncodedStream> {
    Response::new(Box::pin(
        stream.map(|item| item.map_err(|e| status::watch(e, ""))),
    ))
}

impl InvoiceCaseApi {
    /// WatchStateChanges naming the subscription `name`: resumes it, or
    /// creates it with `spec` (the request's filters and start, checked;
    /// `given` names those the request gave).
    pub(super) async fn watch_subscription(
        &self,
        caller: Caller,
        name: String,
        spec: WatchSpec,
        given: Vec<&'static str>,
    ) -> Result<Response<EncodedStream>, Status> {
        let watch = &self.watch;
        // Counted, and hearing of deletions, before the subscription is
        // read: a deletion committed after the read ends the stream.
        let slot = watch.reserve().map_err(|e| status::watch(e, ""))?;
        let found = self
            .store
            .find_subscription(&name)
            .await
            .map_err(|e| status::store(e, ""))?;
        if let Some((subscription, pruned_through)) = found {
            if subscription.owner != caller.subject {
                return Err(status::subscription(SubscriptionError::NotFound, &name));
            }
            if !given.is_empty() {
                return Err(fixed_at_creation(&given));
            }
            if subscription.position.after < pruned_through {
                return Err(status::watch(
                    WatchError::CursorExpired {
                        oldest: cursor::encode_event(pruned_through),
                    },
                    "",
                ));
            }
            let prepared = watch.prepare_resume(
                slot,
                &caller.access,
                subscription.case_id,
                subscription.account_id,
                subscription.position,
            );
            let stream = watch.open(
                prepared,
                caller.valid_until,
                Some((subscription.id, subscription.name)),
            );
            return Ok(encoded(stream));
        }

        // The first watch naming it: its start (a snapshot is taken now, so
        // that the subscription starts where the snapshot does), then the
        // subscription.
        let case_text = spec.case.as_ref().map(ToString::to_string);
        let mut prepared = watch
            .prepare(slot, &caller.access, spec)
            .await
            .map_err(|e| status::watch(e, case_text.as_deref().unwrap_or("")))?;
        let start = watch
            .fix_start(&mut prepared)
            .await
            .map_err(|e| status::watch(e, ""))?;
        let new = NewSubscription {
            name,
            owner: caller.subject.clone(),
            case_id: prepared.case_id(),
            account_id: prepared.account_id().map(str::to_owned),
            start,
        };
        let subscription = match self.store.create_subscription(&new).await {
            Ok(Creation::Created(subscription)) => subscription,
            // Another first watch created it meanwhile: this one resumes it
            // like any later watch (it gets no snapshot of its own).
            Ok(Creation::Existing(subscription))
                if subscription.case_id == new.case_id
                    && subscription.account_id == new.account_id =>
            {
                watch
                    .restart_at(&mut prepared, subscription.position.clone())
                    .await;
                subscription
            }
            Ok(Creation::Existing(_)) => {
                watch.discard(prepared).await;
                return Err(fixed_at_creation(&given));
            }
            Err(e) => {
                watch.discard(prepared).await;
                return Err(status::subscription(e, &new.name));
            }
        };
        let stream = watch.open(
            prepared,
            caller.valid_until,
            Some((subscription.id, subscription.name)),
        );
        Ok(encoded(stream))
    }

    /// AcknowledgeStateChanges.
    pub(super) async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeStateChangesRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let caller = self.authorize(&request, Permission::Read)?;
        let timeout = read_timeout(request.metadata());
        let request = request.into_inner();
        let mut v = Violations::default();
        let name = v.check("subscription", name(&request.subscription));
        let position = v.check(
            "cursor",
            match request.cursor.as_str() {
                "" => Err("is required (a cursor the subscription's stream delivered)".into()),
                text => cursor::decode(text),
            },
        );
        let (name, position) = v
            .finish((|| Some((name?, position?)))())
            .map_err(status::invalid_argument)?;
        let subscription = self
            .store
            .acknowledge(&name, &caller.subject, &position, timeout)
            .await
            .map_err(|e| status::subscription(e, &name))?;
        Ok(Response::new(message(subscription)))
    }

    /// ListSubscriptions.
    pub(super) async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        self.authorize(&request, Permission::ManageSubscriptions)?;
        let timeout = read_timeout(request.metadata());
        let request = request.into_inner();
        let mut v = Violations::default();
        let size = v.check(
            "page_size",
            paging::page_size(request.page_size, DEFAULT_PAGE, MAX_PAGE),
        );
        let after = v.check("page_token", parse_page_token(&request.page_token));
        let (size, after) = v
            .finish((|| Some((size?, after?)))())
            .map_err(status::invalid_argument)?;
        let page = self
            .store
            .list_subscriptions(after.as_deref(), size, timeout)
            .await
            .map_err(|e| status::store(e, ""))?;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: page.subscriptions.into_iter().map(message).collect(),
            next_page_token: page
                .next_after
                .map(|name| page_token(&name))
                .unwrap_or_default(),
        }))
    }

    /// DeleteSubscription.
    pub(super) async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<()>, Status> {
        self.authorize(&request, Permission::ManageSubscriptions)?;
        let timeout = read_timeout(request.metadata());
        let request = request.into_inner();
        let name = name(&request.name).map_err(|e| status::invalid_field("name", e))?;
        self.store
            .delete_subscription(&name, timeout)
            .await
            .map_err(|e| status::subscription(e, &name))?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name("billing-sync_2.eu"), Ok("billing-sync_2.eu".into()));
        assert_eq!(name(&"a".repeat(64)), Ok("a".repeat(64)));
        assert!(name("").is_err());
        assert!(name(&"a".repeat(65)).is_err());
        for bad in ["with space", "slash/", "ümlaut", "tab\t", "semi;colon"] {
            assert!(name(bad).is_err(), "{bad:?}");
        }
        // Never the whole input back.
        let long = format!("{}!", "x".repeat(100_000));
        assert!(name(&long).unwrap_err().len() < 200);
        let bad = format!("{}!", "x".repeat(60));
        assert!(name(&bad).unwrap_err().len() < 200);
    }

    #[test]
    fn page_tokens_round_trip_and_hold_a_name() {
        assert_eq!(parse_page_token(""), Ok(None));
        assert_eq!(
            parse_page_token(&page_token("orders.eu")),
            Ok(Some("orders.eu".into()))
        );
        let mut bytes = vec![PAGE_TOKEN];
        bytes.extend_from_slice(b"not a name!");
        assert!(parse_page_token(&URL_SAFE_NO_PAD.encode(bytes)).is_err());
        assert!(parse_page_token("garbage!").is_err());
        assert!(parse_page_token(&"A".repeat(200)).is_err());
        // A cases' page token is not one.
        let mut bytes = vec![1u8];
        bytes.extend_from_slice(b"orders");
        assert!(parse_page_token(&URL_SAFE_NO_PAD.encode(bytes)).is_err());
    }
}
