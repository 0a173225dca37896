//! The table on PostgreSQL: the same rules as on SQLite ([`super::rules`]), with the rows
//! a batch touches read in one statement and written back in two (arrays through
//! `unnest`), so a batch of a thousand events costs three round trips, not thousands.
//!
//! Called in the transaction that inserts the events, after the insert: it holds the chain
//! lock, so the facts change in the chain's order even with several agents. A poll takes
//! the lock itself (it may come with no events).

use super::TagFact;
use super::rules::{Changes, Facts, Key, Wanted};
use crate::model::Event;
use crate::store::audit::pg::CHAIN_LOCK;
use crate::store::inventory::InventoryUpdate;
use postgres::{GenericClient, Row, Transaction};

/// Applies the events the writer just inserted, per item (`new[i]` for `events[i]`).
pub(in crate::store) fn observe<'a>(
    tx: &mut Transaction<'_>,
    items: impl Iterator<Item = (&'a [Event], &'a [bool])> + Clone,
) -> Result<(), postgres::Error> {
    let wanted = items
        .clone()
        .fold(Wanted::default(), |mut w, (events, new)| {
            w.extend(Wanted::of_events(events.iter(), new));
            w
        });
    if wanted.is_empty() {
        return Ok(());
    }
    let mut facts = Facts::new(load_wanted(tx, &wanted)?);
    for (events, new) in items {
        facts.observe(events.iter(), new);
    }
    store(tx, facts.changes())
}

/// Applies a poll's changes (see [`Facts::apply_inventory`]).
pub(in crate::store) fn apply_inventory(
    tx: &mut Transaction<'_>,
    u: &InventoryUpdate,
) -> Result<(), postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])?;
    let wanted = Wanted::of_inventory(u);
    let mut facts = Facts::new(load_wanted(tx, &wanted)?);
    facts.apply_inventory(u);
    store(tx, facts.changes())
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

/// Three columns of keys, as arrays.
fn columns(keys: &std::collections::BTreeSet<Key>) -> [Vec<&str>; 3] {
    let mut c: [Vec<&str>; 3] = Default::default();
    for (a, b, d) in keys {
        c[0].push(a);
        c[1].push(b);
        c[2].push(d);
    }
    c
}

/// The rows `w` names, in one statement (a row named twice comes twice; [`Facts::new`]
/// keeps one).
fn load_wanted(tx: &mut Transaction<'_>, w: &Wanted) -> Result<Vec<TagFact>, postgres::Error> {
    let [tr, trepo, ttag] = columns(&w.tags);
    let [dr, drepo, dd] = columns(&w.digests);
    let (rr, rrepo): (Vec<&str>, Vec<&str>) = (w.repositories.iter())
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .unzip();
    let registries: Vec<&str> = w.registries.iter().map(String::as_str).collect();
    let sql = format!(
        "SELECT {COLUMNS} FROM tag_facts t
           JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(r, repo, tag)
             ON t.registry = u.r AND t.repository = u.repo AND t.tag = u.tag
         UNION ALL SELECT {COLUMNS} FROM tag_facts t
           JOIN unnest($4::text[], $5::text[], $6::text[]) AS u(r, repo, digest)
             ON t.registry = u.r AND t.repository = u.repo AND t.digest = u.digest
         UNION ALL SELECT {COLUMNS} FROM tag_facts t
           JOIN unnest($7::text[], $8::text[]) AS u(r, repo)
             ON t.registry = u.r AND t.repository = u.repo
         UNION ALL SELECT {COLUMNS} FROM tag_facts t WHERE t.registry = ANY($9::text[])"
    );
    let rows = tx.query(
        &sql,
        &[
            &tr,
            &trepo,
            &ttag,
            &dr,
            &drepo,
            &dd,
            &rr,
            &rrepo,
            &registries,
        ],
    )?;
    Ok(rows.iter().map(fact).collect())
}

fn store(tx: &mut Transaction<'_>, c: Changes) -> Result<(), postgres::Error> {
    if !c.delete.is_empty() {
        let keys = c.delete.iter().cloned().collect();
        let [r, repo, tag] = columns(&keys);
        tx.execute(
            "DELETE FROM tag_facts t USING unnest($1::text[], $2::text[], $3::text[])
                AS u(r, repo, tag)
             WHERE t.registry = u.r AND t.repository = u.repo AND t.tag = u.tag",
            &[&r, &repo, &tag],
        )?;
    }
    if c.upsert.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&TagFact) -> &str| c.upsert.iter().map(f).collect::<Vec<_>>();
    let opt = |f: fn(&TagFact) -> Option<&str>| c.upsert.iter().map(f).collect::<Vec<_>>();
    tx.execute(
        "INSERT INTO tag_facts (registry, repository, tag, digest, first_seen_at, pushed_at,
            last_pulled_at, last_puller)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
            $6::text[], $7::text[], $8::text[])
         ON CONFLICT (registry, repository, tag) DO UPDATE SET digest = excluded.digest,
            first_seen_at = excluded.first_seen_at, pushed_at = excluded.pushed_at,
            last_pulled_at = excluded.last_pulled_at, last_puller = excluded.last_puller",
        &[
            &text(|f| &f.registry),
            &text(|f| &f.repository),
            &text(|f| &f.tag),
            &opt(|f| f.digest.as_deref()),
            &text(|f| &f.first_seen_at),
            &opt(|f| f.pushed_at.as_deref()),
            &opt(|f| f.last_pulled_at.as_deref()),
            &opt(|f| f.last_puller.as_deref()),
        ],
    )?;
    Ok(())
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
