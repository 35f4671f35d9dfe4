//! hookfleet's AMQP topology, declared from this one place by every service
//! at start and after every reconnect (DESIGN.md invariant 4).
//!
//! ```text
//! {p}.events   topic  --#-->  {p}.route    (producer router)
//! {p}.deliver  topic  --#.task-->    {p}.deliver  (worker fleet, any worker)
//!                     --#.lane.N-->  {p}.lane.N   (N < 16, one owner each)
//!                     --#.retry.N--> {p}.retry.N  (N < 16, one owner each)
//! {p}.ledger   fanout ----->  {p}.ledger   (ledger)
//! {p}.dead     fanout ----->  {p}.dead     (parking / dead-letter queue)
//! {p}.delay.N .. {p}.delay.0  binary delay levels, ending in {p}.deliver
//! {p}.registry fanout -----> one exclusive queue per worker (registry view)
//! ```
//!
//! Every work queue is a durable quorum queue. Each exchange has `{p}.dead`
//! as its alternate exchange, so a message that matches no binding is kept,
//! not dropped; each work queue dead-letters (at least once) to `{p}.dead`
//! after too many redeliveries, so a message that crashes its consumer
//! cannot loop forever.

mod connection;
mod consumer;
mod delay;
mod group;
mod message;
mod publisher;
mod session;
mod settle;

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

pub use connection::{Nodes, connect, connect_with_retry};
pub use consumer::consume;
pub use delay::{DelayRoute, MAX_DELAY_LEVELS};
pub use group::{GroupCommit, Limits, Stopped};
pub use message::{
    TASK_ROUTING_KEY, continue_trace_from, decode_properties, encode_properties, header_str,
    headers_with, persistent_json, task_properties, traced_headers,
};
pub use publisher::{PublishError, Publisher, Sent, header_frame_len};
pub use session::{Link, SessionWork, consume_supervised, supervise};
pub use settle::{Settle, Settler};

/// After this many deliveries of one message, a work queue dead-letters it
/// to `{p}.dead` instead of handing it out again.
pub const DELIVERY_LIMIT: i64 = 20;

/// The names of every exchange and queue, derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    delay_levels: u8,
    /// `x-quorum-initial-group-size` of every quorum queue; `None`: the
    /// broker's default (a replica on every node of the cluster).
    quorum_group_size: Option<u16>,
}

impl Topology {
    /// `delay_levels` binary delay queues allow retries up to
    /// 2^delay_levels - 1 seconds ahead (17 levels: about 36 hours).
    pub fn new(prefix: impl Into<String>, delay_levels: u8) -> Self {
        Self {
            prefix: prefix.into(),
            delay_levels: delay_levels.clamp(1, MAX_DELAY_LEVELS),
            quorum_group_size: None,
        }
    }

    pub fn from_settings(settings: &hookfleet_config::AmqpSettings) -> Self {
        Self {
            quorum_group_size: settings.quorum_group_size,
            ..Self::new(settings.prefix.clone(), settings.delay_levels)
        }
    }

    /// The prefix of every name; exchanges under it are hookfleet's own.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// Topic exchange applications publish events to; routing key = event type.
    pub fn events_exchange(&self) -> String {
        self.name("events")
    }
    /// The router's queue, bound to every event.
    pub fn route_queue(&self) -> String {
        self.name("route")
    }
    /// Topic exchange for delivery tasks (the delay levels end here too).
    pub fn deliver_exchange(&self) -> String {
        self.name("deliver")
    }
    pub fn deliver_queue(&self) -> String {
        self.name("deliver")
    }
    /// Lane `lane`: a work queue with a single active consumer, so one
    /// worker at a time decides its tasks (ordered and rate-limited
    /// endpoints, issue 17). Bound to the deliver exchange with the key
    /// [`hookfleet_contract::lane_routing_key`].
    pub fn lane_queue(&self, lane: u16) -> String {
        self.name(&format!("lane.{lane}"))
    }
    /// Lane `lane`'s state: one message (the queue keeps the last), the
    /// keys its holder has blocked on a task out in the delay levels, for
    /// the holder that takes the lane over.
    pub fn lane_state_queue(&self, lane: u16) -> String {
        self.name(&format!("lane.{lane}.state"))
    }
    /// Retry queue `queue`: where a fast-path task's retries come back to
    /// from the delay levels, by hash of its delivery id
    /// ([`hookfleet_contract::retry_queue_of`]), so that every copy of one
    /// retry reaches the one worker holding the queue (single active
    /// consumer), which drops a copy it has already handled. Bound to the
    /// deliver exchange with [`hookfleet_contract::retry_routing_key`].
    pub fn retry_queue(&self, queue: u16) -> String {
        self.name(&format!("retry.{queue}"))
    }
    /// Fanout exchange for ledger records (routed events, attempt outcomes).
    pub fn ledger_exchange(&self) -> String {
        self.name("ledger")
    }
    pub fn ledger_queue(&self) -> String {
        self.name("ledger")
    }
    /// Fanout exchange and queue for parked and dead-lettered messages.
    pub fn dead_exchange(&self) -> String {
        self.name("dead")
    }
    pub fn dead_queue(&self) -> String {
        self.name("dead")
    }
    /// Fanout exchange on which producers broadcast registry snapshots to
    /// every worker's private queue (see [`Topology::declare_registry_view`]).
    /// No alternate exchange: with no worker listening, a snapshot is
    /// simply not wanted.
    pub fn registry_exchange(&self) -> String {
        self.name("registry")
    }
    /// Delay level `k`: an exchange and a queue whose messages wait 2^k s.
    pub fn delay_exchange(&self, level: u8) -> String {
        self.name(&format!("delay.{level}"))
    }
    pub fn delay_queue(&self, level: u8) -> String {
        self.name(&format!("delay.{level}"))
    }
    pub fn delay_levels(&self) -> u8 {
        self.delay_levels
    }
    /// The route that makes a message wait `seconds` and then land in the
    /// deliver queue with routing key `key`.
    pub fn delay_route(&self, seconds: u64, key: &str) -> DelayRoute {
        DelayRoute::new(self, seconds, key)
    }

    /// Declares everything, idempotently. Call it on every (re)connect.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let dead = self.dead_exchange();
        self.exchange(channel, &dead, ExchangeKind::Fanout, None)
            .await?;
        self.queue(channel, &self.dead_queue(), self.quorum(), &dead, "")
            .await?;

        let events = self.events_exchange();
        self.exchange(channel, &events, ExchangeKind::Topic, Some(&dead))
            .await?;
        self.queue(
            channel,
            &self.route_queue(),
            self.work_queue(&dead),
            &events,
            "#",
        )
        .await?;

        let deliver = self.deliver_exchange();
        self.exchange(channel, &deliver, ExchangeKind::Topic, Some(&dead))
            .await?;
        self.queue(
            channel,
            &self.deliver_queue(),
            self.work_queue(&dead),
            &deliver,
            &format!("#.{TASK_ROUTING_KEY}"),
        )
        .await?;
        // A task keeps the delay bits in front of its key when it comes
        // out of the delay levels, hence `#.` in front of the keys. Before
        // lanes the deliver queue took every key; a lane's task must reach
        // its lane alone. Unbinding what is not bound is a no-op.
        channel
            .queue_unbind(
                self.deliver_queue().as_str().into(),
                deliver.as_str().into(),
                "#".into(),
                FieldTable::default(),
            )
            .await?;
        for lane in 0..hookfleet_contract::LANES {
            let mut args = self.work_queue(&dead);
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            self.queue(
                channel,
                &self.lane_queue(lane),
                args,
                &deliver,
                &format!("#.{}", hookfleet_contract::lane_routing_key(lane)),
            )
            .await?;
            let mut args = self.quorum();
            args.insert("x-max-length".into(), long(1));
            args.insert("x-overflow".into(), string("drop-head"));
            channel
                .queue_declare(
                    self.lane_state_queue(lane).as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    args,
                )
                .await?;
        }

        for queue in 0..hookfleet_contract::RETRY_QUEUES {
            let mut args = self.work_queue(&dead);
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            self.queue(
                channel,
                &self.retry_queue(queue),
                args,
                &deliver,
                &format!("#.{}", hookfleet_contract::retry_routing_key(queue)),
            )
            .await?;
        }

        let ledger = self.ledger_exchange();
        self.exchange(channel, &ledger, ExchangeKind::Fanout, Some(&dead))
            .await?;
        self.queue(
            channel,
            &self.ledger_queue(),
            self.work_queue(&dead),
            &ledger,
            "",
        )
        .await?;

        self.exchange(
            channel,
            &self.registry_exchange(),
            ExchangeKind::Fanout,
            None,
        )
        .await?;

        self.declare_delay_levels(channel).await
    }

    /// Declares a worker's private registry queue: server-named, exclusive
    /// to the connection (gone with it), bound to the registry exchange.
    /// Returns its name.
    pub async fn declare_registry_view(&self, channel: &Channel) -> lapin::Result<String> {
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let name = queue.name().as_str().to_owned();
        channel
            .queue_bind(
                name.as_str().into(),
                self.registry_exchange().as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(name)
    }

    /// Level k routes on the k-th bit of the routing key: a 1 waits in the
    /// level's queue (TTL 2^k s) and is dead-lettered to level k-1; a 0 goes
    /// straight to level k-1. Below level 0 is the deliver exchange.
    async fn declare_delay_levels(&self, channel: &Channel) -> lapin::Result<()> {
        let dead = self.dead_exchange();
        for level in (0..self.delay_levels).rev() {
            let exchange = self.delay_exchange(level);
            self.exchange(channel, &exchange, ExchangeKind::Topic, Some(&dead))
                .await?;
        }
        for level in 0..self.delay_levels {
            let exchange = self.delay_exchange(level);
            let next = if level == 0 {
                self.deliver_exchange()
            } else {
                self.delay_exchange(level - 1)
            };
            let mut args = self.quorum();
            args.insert("x-message-ttl".into(), long(1000_i64 << level));
            args.insert("x-dead-letter-exchange".into(), string(&next));
            args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
            args.insert("x-overflow".into(), string("reject-publish"));
            let (wait, skip) = delay::binding_patterns(self.delay_levels, level);
            self.queue(channel, &self.delay_queue(level), args, &exchange, &wait)
                .await?;
            channel
                .exchange_bind(
                    next.as_str().into(),
                    exchange.as_str().into(),
                    skip.as_str().into(),
                    ExchangeBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Deletes everything this topology declared. For tests and teardown.
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        let mut queues = vec![
            self.route_queue(),
            self.deliver_queue(),
            self.ledger_queue(),
            self.dead_queue(),
        ];
        let mut exchanges = vec![
            self.events_exchange(),
            self.deliver_exchange(),
            self.ledger_exchange(),
            self.dead_exchange(),
            self.registry_exchange(),
        ];
        for level in 0..self.delay_levels {
            queues.push(self.delay_queue(level));
            exchanges.push(self.delay_exchange(level));
        }
        for lane in 0..hookfleet_contract::LANES {
            queues.push(self.lane_queue(lane));
            queues.push(self.lane_state_queue(lane));
        }
        for queue in 0..hookfleet_contract::RETRY_QUEUES {
            queues.push(self.retry_queue(queue));
        }
        for queue in queues {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in exchanges {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }

    async fn exchange(
        &self,
        channel: &Channel,
        name: &str,
        kind: ExchangeKind,
        alternate: Option<&str>,
    ) -> lapin::Result<()> {
        let mut args = FieldTable::default();
        if let Some(alternate) = alternate {
            args.insert("alternate-exchange".into(), string(alternate));
        }
        channel
            .exchange_declare(
                name.into(),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                args,
            )
            .await
    }

    async fn queue(
        &self,
        channel: &Channel,
        name: &str,
        args: FieldTable,
        exchange: &str,
        binding: &str,
    ) -> lapin::Result<()> {
        channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await?;
        channel
            .queue_bind(
                name.into(),
                exchange.into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn long(value: i64) -> AMQPValue {
    AMQPValue::LongLongInt(value)
}

impl Topology {
    /// The arguments every quorum queue starts from.
    fn quorum(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(ShortString::from("x-queue-type"), string("quorum"));
        if let Some(size) = self.quorum_group_size {
            args.insert("x-quorum-initial-group-size".into(), long(size.into()));
        }
        args
    }

    /// A quorum work queue that dead-letters poison messages to `dead`.
    fn work_queue(&self, dead: &str) -> FieldTable {
        let mut args = self.quorum();
        args.insert("x-delivery-limit".into(), long(DELIVERY_LIMIT));
        args.insert("x-dead-letter-exchange".into(), string(dead));
        args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
        args.insert("x-overflow".into(), string("reject-publish"));
        args
    }
}
