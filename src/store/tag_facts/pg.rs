//! The table on PostgreSQL: the same rules as on SQLite ([`super::rules`]), with the rows
//! a batch touches read in one statement ([`LOAD`]) and written back in two ([`DELETE`],
//! [`UPSERT`]; arrays through `unnest`), so a batch of a thousand events costs three
//! statements, not thousands. The statements and their parameters are public to the store
//! so the writer's pipelined appends ([`crate::store::pg_append`]) send them too.
//!
//! Used in the transaction that inserts the events, under the chain lock: the facts change
//! in the chain's order even with several agents. A poll takes the lock itself (it may come
//! with no events).

use super::TagFact;
use super::rules::{Changes, Facts, Key, Wanted};
use crate::model::Event;
use crate::store::audit::pg::CHAIN_LOCK;
use crate::store::inventory::InventoryUpdate;
use postgres::types::ToSql;
use postgres::{GenericClient, Row, Transaction};

/// The rows a batch may touch: those of every event as if all were new (the caller does
/// not know yet which are re-deliveries; a few rows too many cost nothing).
pub(in crate::store) fn wanted<'a>(events: impl Iterator<Item = &'a [Event]>) -> Wanted {
    events.fold(Wanted::default(), |mut w, events| {
        w.extend(Wanted::of_events(events.iter(), &vec![true; events.len()]));
        w
    })
}

/// Applies the events the writer inserted, per item (`new[i]` for `events[i]`), to the
/// rows loaded for them; what to write back.
pub(in crate::store) fn changes<'a>(
    loaded: &[Row],
    items: impl Iterator<Item = (&'a [Event], &'a [bool])>,
) -> Changes {
    let mut facts = Facts::new(loaded.iter().map(fact).collect());
    for (events, new) in items {
        facts.observe(events.iter(), new);
    }
    facts.changes()
}

/// Applies a poll's changes (see [`Facts::apply_inventory`]), in the poll's transaction.
pub(in crate::store) fn apply_inventory(
    tx: &mut Transaction<'_>,
    u: &InventoryUpdate,
) -> Result<(), postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])?;
    let wanted = Wanted::of_inventory(u);
    let loaded = tx.query(LOAD, &LoadParams::of(&wanted).refs())?;
    let mut facts = Facts::new(loaded.iter().map(fact).collect());
    facts.apply_inventory(u);
    let c = facts.changes();
    let (del, put) = (DeleteParams::of(&c), UpsertParams::of(&c));
    tx.execute(DELETE, &del.refs())?;
    tx.execute(UPSERT, &put.refs())?;
    Ok(())
}

const COLUMNS: &str = "t.registry, t.repository, t.tag, t.digest, t.first_seen_at, t.pushed_at,
    t.last_pulled_at, t.last_puller";

fn fact(r: &Row) -> TagFact {
    TagFact {
        registry: r.get(0),
        repository: r.get(1),
        tag: r.get(2),
        digest: r.get(3),
        first_seen_at: r.get(4),
        pushed_at: r.get(5),
        last_pulled_at: r.get(6),
        last_puller: r.get(7),
    }
}

/// The rows a [`Wanted`] names, in one statement (a row named twice comes twice;
/// [`Facts::new`] keeps one): by key, by digest, by repository, by registry. Each lateral
/// subquery is an index lookup per row of its arrays (`OFFSET 0` keeps the planner from
/// flattening it into a join it might hash over the whole table), whatever the plan; an
/// empty array reads nothing.
pub(in crate::store) const LOAD: &str = "SELECT t.* FROM unnest($1::text[], $2::text[],
        $3::text[]) AS u(r, repo, tag)
       CROSS JOIN LATERAL (SELECT registry, repository, tag, digest, first_seen_at, pushed_at,
           last_pulled_at, last_puller FROM tag_facts
         WHERE registry = u.r AND repository = u.repo AND tag = u.tag OFFSET 0) t
     UNION ALL SELECT t.* FROM unnest($4::text[], $5::text[], $6::text[]) AS u(r, repo, digest)
       CROSS JOIN LATERAL (SELECT registry, repository, tag, digest, first_seen_at, pushed_at,
           last_pulled_at, last_puller FROM tag_facts
         WHERE registry = u.r AND repository = u.repo AND digest = u.digest OFFSET 0) t
     UNION ALL SELECT t.* FROM unnest($7::text[], $8::text[]) AS u(r, repo)
       CROSS JOIN LATERAL (SELECT registry, repository, tag, digest, first_seen_at, pushed_at,
           last_pulled_at, last_puller FROM tag_facts
         WHERE registry = u.r AND repository = u.repo OFFSET 0) t
     UNION ALL SELECT t.* FROM unnest($9::text[]) AS u(r)
       CROSS JOIN LATERAL (SELECT registry, repository, tag, digest, first_seen_at, pushed_at,
           last_pulled_at, last_puller FROM tag_facts WHERE registry = u.r OFFSET 0) t";

pub(in crate::store) const DELETE: &str =
    "DELETE FROM tag_facts t USING unnest($1::text[], $2::text[], $3::text[]) AS u(r, repo, tag)
     WHERE t.registry = u.r AND t.repository = u.repo AND t.tag = u.tag";

pub(in crate::store) const UPSERT: &str = "INSERT INTO tag_facts (registry, repository, tag,
        digest, first_seen_at, pushed_at, last_pulled_at, last_puller)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::text[])
     ON CONFLICT (registry, repository, tag) DO UPDATE SET digest = excluded.digest,
        first_seen_at = excluded.first_seen_at, pushed_at = excluded.pushed_at,
        last_pulled_at = excluded.last_pulled_at, last_puller = excluded.last_puller";

/// Three columns of keys, as arrays.
fn columns<'a>(keys: impl Iterator<Item = &'a Key>) -> [Vec<&'a str>; 3] {
    let mut c: [Vec<&str>; 3] = Default::default();
    for (a, b, d) in keys {
        c[0].push(a);
        c[1].push(b);
        c[2].push(d);
    }
    c
}

/// The parameters of [`LOAD`].
pub(in crate::store) struct LoadParams<'a> {
    tags: [Vec<&'a str>; 3],
    digests: [Vec<&'a str>; 3],
    repositories: [Vec<&'a str>; 2],
    registries: Vec<&'a str>,
}

impl<'a> LoadParams<'a> {
    pub(in crate::store) fn of(w: &'a Wanted) -> Self {
        let (r, repo) = (w.repositories.iter())
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .unzip();
        LoadParams {
            tags: columns(w.tags.iter()),
            digests: columns(w.digests.iter()),
            repositories: [r, repo],
            registries: w.registries.iter().map(String::as_str).collect(),
        }
    }

    pub(in crate::store) fn refs(&self) -> [&(dyn ToSql + Sync); 9] {
        let (t, d, r) = (&self.tags, &self.digests, &self.repositories);
        [
            &t[0],
            &t[1],
            &t[2],
            &d[0],
            &d[1],
            &d[2],
            &r[0],
            &r[1],
            &self.registries,
        ]
    }
}

/// The parameters of [`DELETE`].
pub(in crate::store) struct DeleteParams<'a>([Vec<&'a str>; 3]);

impl<'a> DeleteParams<'a> {
    pub(in crate::store) fn of(c: &'a Changes) -> Self {
        DeleteParams(columns(c.delete.iter()))
    }

    pub(in crate::store) fn refs(&self) -> [&(dyn ToSql + Sync); 3] {
        [&self.0[0], &self.0[1], &self.0[2]]
    }
}

/// The parameters of [`UPSERT`] (the keys are unique: one row is not changed twice).
pub(in crate::store) struct UpsertParams<'a> {
    text: [Vec<&'a str>; 4],
    opt: [Vec<Option<&'a str>>; 4],
}

impl<'a> UpsertParams<'a> {
    pub(in crate::store) fn of(c: &'a Changes) -> Self {
        let rows = &c.upsert;
        let text = |f: fn(&TagFact) -> &str| rows.iter().map(f).collect();
        let opt = |f: fn(&TagFact) -> Option<&str>| rows.iter().map(f).collect();
        UpsertParams {
            text: [
                text(|f| &f.registry),
                text(|f| &f.repository),
                text(|f| &f.tag),
                text(|f| &f.first_seen_at),
            ],
            opt: [
                opt(|f| f.digest.as_deref()),
                opt(|f| f.pushed_at.as_deref()),
                opt(|f| f.last_pulled_at.as_deref()),
                opt(|f| f.last_puller.as_deref()),
            ],
        }
    }

    pub(in crate::store) fn refs(&self) -> [&(dyn ToSql + Sync); 8] {
        let (t, o) = (&self.text, &self.opt);
        [&t[0], &t[1], &t[2], &o[0], &t[3], &o[1], &o[2], &o[3]]
    }
}

/// Every tag of `registry` the store knows, by repository and tag.
pub(in crate::store) fn load(
    c: &mut impl GenericClient,
    registry: &str,
) -> Result<Vec<TagFact>, postgres::Error> {
    let rows = c.query(
        &format!("SELECT {COLUMNS} FROM tag_facts t WHERE registry = $1 ORDER BY repository, tag"),
        &[&registry],
    )?;
    Ok(rows.iter().map(fact).collect())
}
