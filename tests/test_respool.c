/* The generic resource pool (src/respool.c) alone, on plain integers and a
 * fake constructor: no driver, no database. Order, the barging bound,
 * parking across threads, deadlines, cancel racing a release, failed makes
 * giving their slot back, and close with requests pending. */
#include "check.h"
#include "respool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

typedef struct num {
    dbs__rp_item it; /* it.data points to the num */
    int value;
} num;

static atomic_int made, unmade;

/* The fake constructor and destructor. */
static dbs__rp_item *make(int value)
{
    num *n = calloc(1, sizeof *n);
    CHECK(n);
    n->value = value;
    n->it.data = n;
    atomic_fetch_add(&made, 1);
    return &n->it;
}

static void unmake(dbs__rp_item *it)
{
    atomic_fetch_add(&unmade, 1);
    free(it->data);
}

/* it left the pool (a GONE outcome, dbs__rp_take_stale): closed, then
 * reported, as the pool layer does (dbs__conn_gone). */
static void closed(dbs__respool *rp, dbs__rp_item *it)
{
    unmake(it);
    dbs__rp_left(rp, 1);
    dbs__rp_pass_free(rp);
}

static void pool_init(dbs__respool *rp, int max, int keep, int64_t barge_ns, int64_t hold_ns)
{
    dbs__rp_config cfg = {.max_size = max, .keep_size = keep, .barge_ns = barge_ns,
                          .barge_hold_ns = hold_ns};
    dbs__rp_init(rp, &cfg);
}

static void pool_end(dbs__respool *rp)
{
    for (dbs__rp_item *c = dbs__rp_close(rp), *next; c; c = next) {
        next = c->next;
        unmake(c);
    }
    dbs__rp_destroy(rp);
}

/* A request that records when it was served, as an event loop would. */
static int served_order[64];
static int n_served;

static void note_done(dbs__rp_req *r)
{
    served_order[n_served++] = (int)(intptr_t)r->arg;
}

/* Acquires, making an item when the pool says CREATE. */
static dbs__rp_item *get(dbs__respool *rp, dbs__rp_req *r, int value)
{
    dbs__rp_item *it = NULL;
    int st = dbs__rp_acquire(rp, r, 0, &it);
    if (st == DBS__RP_CREATE) {
        it = make(value);
        CHECK_EQ(dbs__rp_created(rp, it, dbs__now_ns(), false), DBS__RP_READY);
        return it;
    }
    CHECK_EQ(st, DBS__RP_READY);
    return it;
}

static void expect(dbs__respool *rp, int open, int idle, int in_use, int pending, int waiting)
{
    dbs__rp_stats s;
    dbs__rp_stats_get(rp, &s);
    CHECK_EQ(s.open, open);
    CHECK_EQ(s.idle, idle);
    CHECK_EQ(s.in_use, in_use);
    CHECK_EQ(s.pending, pending);
    CHECK_EQ(s.waiting, waiting);
}

static void test_basic(void)
{
    dbs__respool rp;
    pool_init(&rp, 2, 2, 0, 0);
    dbs__rp_req r = {.done = note_done};
    dbs__rp_item *a = get(&rp, &r, 1), *b = get(&rp, &r, 2);
    CHECK(a != b);
    expect(&rp, 2, 0, 2, 0, 0);
    CHECK_EQ(dbs__rp_release(&rp, a, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    CHECK_EQ(dbs__rp_release(&rp, b, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    /* LIFO, unless an id is preferred */
    dbs__rp_item *c = NULL;
    CHECK_EQ(dbs__rp_acquire(&rp, &r, 0, &c), DBS__RP_READY);
    CHECK(c == b);
    CHECK_EQ(dbs__rp_release(&rp, c, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    CHECK_EQ(dbs__rp_acquire(&rp, &r, a->id, &c), DBS__RP_READY);
    CHECK(c == a);
    /* asked to drop: gone, and its slot free again */
    CHECK_EQ(dbs__rp_release(&rp, c, dbs__now_ns(), DBS__RP_DROP), DBS__RP_GONE_ASKED);
    closed(&rp, c);
    expect(&rp, 1, 1, 0, 0, 0);
    /* expired: dropped on the way back */
    c = get(&rp, &r, 3);
    dbs__rp_item *d = get(&rp, &r, 4);
    d->expires_ns = 1;
    CHECK_EQ(dbs__rp_release(&rp, d, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_GONE_EXPIRED);
    closed(&rp, d);
    CHECK_EQ(dbs__rp_release(&rp, c, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    pool_end(&rp);
    CHECK_EQ(n_served, 0);
}

/* Overflow: above keep_size an item given back while nobody waits goes. */
static void test_overflow(void)
{
    dbs__respool rp;
    pool_init(&rp, 3, 1, 0, 0);
    dbs__rp_req r = {.done = note_done};
    dbs__rp_item *a = get(&rp, &r, 1), *b = get(&rp, &r, 2);
    CHECK_EQ(dbs__rp_release(&rp, a, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_GONE_OVERFLOW);
    closed(&rp, a);
    CHECK_EQ(dbs__rp_release(&rp, b, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    expect(&rp, 1, 1, 0, 0, 0);
    pool_end(&rp);
}

/* Upkeep: warm-up reserves stay within keep_size, an idle timeout spares
 * keep_min idle items whatever is in use, and a look (KEEP_LOOKED) does
 * not reset an item's idle time. */
static void test_upkeep(void)
{
    dbs__respool rp;
    pool_init(&rp, 4, 2, 0, 0);
    dbs__rp_req r = {.done = note_done};
    dbs__rp_item *a = get(&rp, &r, 1), *b = get(&rp, &r, 2);
    /* keep_size items in use: no room to warm up, though max_size has */
    CHECK_EQ(dbs__rp_reserve_upto(&rp, 2, 0), 0);
    CHECK_EQ(dbs__rp_release(&rp, b, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    /* one in use, one idle, keep_min 1: the idle one is not beyond it */
    dbs__rp_item *exp, *idle;
    dbs__rp_take_stale(&rp, dbs__now_ns(), INT64_MAX, 1, &exp, &idle);
    CHECK(exp == NULL && idle == NULL);
    expect(&rp, 2, 1, 1, 0, 0);
    CHECK_EQ(dbs__rp_release(&rp, a, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    /* a look keeps the time of the last use */
    int64_t used = dbs__now_ns();
    int n;
    dbs__rp_item *looked = dbs__rp_take_idle_before(&rp, INT64_MAX, &n);
    CHECK_EQ(n, 2);
    for (dbs__rp_item *c = looked, *next; c; c = next) {
        next = c->next;
        CHECK_EQ(dbs__rp_release(&rp, c, used + 1000000000, DBS__RP_KEEP_LOOKED),
                 DBS__RP_IDLE);
    }
    dbs__rp_take_stale(&rp, used + 1000000000, used, 1, &exp, &idle);
    CHECK(exp == NULL && idle != NULL && idle->next == NULL);
    closed(&rp, idle);
    expect(&rp, 1, 1, 0, 0, 0);
    pool_end(&rp);
}

/* Requests are served oldest first, each by a direct hand-off. */
static void test_fifo(void)
{
    dbs__respool rp;
    pool_init(&rp, 1, 1, 0, 0);
    n_served = 0;
    dbs__rp_req first = {.done = note_done};
    dbs__rp_item *it = get(&rp, &first, 1);
    dbs__rp_req q[8];
    for (int i = 0; i < 8; i++) {
        q[i] = (dbs__rp_req){.done = note_done, .arg = (void *)(intptr_t)i};
        dbs__rp_item *none = NULL;
        CHECK_EQ(dbs__rp_acquire(&rp, &q[i], 0, &none), DBS__RP_PENDING);
        CHECK(!none);
    }
    expect(&rp, 1, 0, 1, 0, 8);
    for (int i = 0; i < 8; i++) {
        CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_HANDED);
        CHECK_EQ(n_served, i + 1);
        CHECK_EQ(served_order[i], i);
        CHECK(q[i].item == it);
        CHECK(!q[i].queued);
    }
    /* A newcomer does not pass the queue: with one waiting, a free
     * parking or an idle item would still go to the queue. */
    expect(&rp, 1, 0, 1, 0, 0);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    pool_end(&rp);
}

/* A failed make gives its slot back: to the oldest request if one waits. */
static void test_create_failed(void)
{
    dbs__respool rp;
    pool_init(&rp, 1, 1, 0, 0);
    n_served = 0;
    dbs__rp_req a = {.done = note_done}, b = {.done = note_done, .arg = (void *)7};
    dbs__rp_item *it = NULL;
    CHECK_EQ(dbs__rp_acquire(&rp, &a, 0, &it), DBS__RP_CREATE);
    expect(&rp, 0, 0, 0, 1, 0);
    CHECK_EQ(dbs__rp_acquire(&rp, &b, 0, &it), DBS__RP_PENDING);
    dbs__rp_create_failed(&rp);
    CHECK_EQ(n_served, 1);
    CHECK_EQ(served_order[0], 7);
    CHECK(b.may_create && !b.item);
    expect(&rp, 0, 0, 0, 1, 0);
    dbs__rp_create_failed(&rp);
    expect(&rp, 0, 0, 0, 0, 0);
    /* the slot is free again: the next acquire may make one */
    CHECK_EQ(dbs__rp_acquire(&rp, &a, 0, &it), DBS__RP_CREATE);
    dbs__rp_create_failed(&rp);
    pool_end(&rp);
}

/* The barging bound: with a request waiting, the giver may park its item
 * for its own next acquire only while its holds add up to less than
 * barge_hold_ns and the oldest request has waited less than barge_ns; then
 * the item goes to the queue. */
static void test_barging(void)
{
    const int64_t hour = 3600LL * 1000000000;
    dbs__respool rp;
    pool_init(&rp, 1, 1, hour, 10);
    n_served = 0;
    dbs__rp_req own = {.done = note_done}, other = {.done = note_done, .arg = (void *)1};
    dbs__rp_item *it = get(&rp, &own, 1), *got = NULL;
    /* nobody waits: parking is free, and any token of the slot takes it */
    CHECK(dbs__rp_park(&rp, it, 1, dbs__now_ns(), 1000));
    CHECK(dbs__rp_unpark(&rp, 2, dbs__now_ns()) == NULL); /* another slot */
    CHECK(dbs__rp_unpark(&rp, 1 + DBS__RP_SLOTS, dbs__now_ns()) == it);
    CHECK_EQ(dbs__rp_acquire(&rp, &other, 0, &got), DBS__RP_PENDING);
    /* one waits: 4 + 4 < 10 may barge, the third hold spends the budget */
    CHECK(dbs__rp_park(&rp, it, 1, dbs__now_ns(), 4));
    CHECK(dbs__rp_unpark(&rp, 1 + DBS__RP_SLOTS, dbs__now_ns()) == NULL); /* not its token */
    CHECK(dbs__rp_unpark(&rp, 1, dbs__now_ns()) == it);
    CHECK(dbs__rp_park(&rp, it, 1, dbs__now_ns(), 4));
    CHECK(dbs__rp_unpark(&rp, 1, dbs__now_ns()) == it);
    CHECK(!dbs__rp_park(&rp, it, 1, dbs__now_ns(), 4));
    CHECK_EQ(n_served, 0);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_HANDED);
    CHECK_EQ(n_served, 1);
    CHECK(other.item == it);
    /* the run was broken: the budget starts again */
    CHECK_EQ(dbs__rp_acquire(&rp, &own, 0, &got), DBS__RP_PENDING);
    CHECK(dbs__rp_park(&rp, it, 2, dbs__now_ns(), 4));
    /* at the oldest's barge limit order becomes strict: the parked item
     * goes to it, and nobody parks while anyone waits */
    dbs__rp_req third = {.done = note_done, .arg = (void *)3};
    CHECK_EQ(dbs__rp_acquire(&rp, &third, 0, &got), DBS__RP_PENDING);
    CHECK(dbs__rp_expire(&rp, own.since + hour) == NULL);
    CHECK_EQ(n_served, 2);
    CHECK(own.item == it);
    /* the next in line has waited less than barge_ns: barging again */
    CHECK(dbs__rp_park(&rp, it, 1, dbs__now_ns(), 4));
    CHECK(dbs__rp_unpark(&rp, 1, dbs__now_ns()) == it);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_HANDED);
    CHECK(third.item == it);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    pool_end(&rp);

    /* strict order (barge_ns 0): nobody parks while anyone waits */
    pool_init(&rp, 1, 1, 0, 0);
    it = get(&rp, &own, 1);
    CHECK_EQ(dbs__rp_acquire(&rp, &other, 0, &got), DBS__RP_PENDING);
    CHECK(!dbs__rp_park(&rp, it, 1, dbs__now_ns(), 0));
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_HANDED);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    pool_end(&rp);
}

/* More tokens than parking slots: tokens t and t + DBS__RP_SLOTS share a
 * slot. A slot-mate that cannot park (the slot holds t's item) has no run
 * of its own to break, so t's run of holds still counts toward the hold
 * budget: t may not take its item back for longer than barge_hold_ns in
 * all while requests wait. */
static void test_barging_shared_slot(void)
{
    const int64_t hour = 3600LL * 1000000000;
    dbs__respool rp;
    pool_init(&rp, 2, 2, hour, 10);
    n_served = 0;
    dbs__rp_req own = {.done = note_done};
    dbs__rp_req w1 = {.done = note_done, .arg = (void *)1};
    dbs__rp_req w2 = {.done = note_done, .arg = (void *)2};
    dbs__rp_item *it = get(&rp, &own, 1), *mate = get(&rp, &own, 2), *got = NULL;
    CHECK_EQ(dbs__rp_acquire(&rp, &w1, 0, &got), DBS__RP_PENDING);
    CHECK_EQ(dbs__rp_acquire(&rp, &w2, 0, &got), DBS__RP_PENDING);
    const unsigned t = 1, slot_mate = 1 + DBS__RP_SLOTS;
    CHECK(dbs__rp_park(&rp, it, t, dbs__now_ns(), 4)); /* run: 4 */
    /* the slot is taken: the mate's item goes to the oldest request */
    CHECK(!dbs__rp_park(&rp, mate, slot_mate, dbs__now_ns(), 1));
    CHECK_EQ(dbs__rp_release(&rp, mate, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_HANDED);
    CHECK(w1.item == mate);
    CHECK(dbs__rp_unpark(&rp, t, dbs__now_ns()) == it);
    CHECK(dbs__rp_park(&rp, it, t, dbs__now_ns(), 4)); /* run: 8 */
    CHECK(dbs__rp_unpark(&rp, t, dbs__now_ns()) == it);
    CHECK(!dbs__rp_park(&rp, it, t, dbs__now_ns(), 4)); /* 12: spent */
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_HANDED);
    CHECK(w2.item == it);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    CHECK_EQ(dbs__rp_release(&rp, mate, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    pool_end(&rp);
}

/* An item parked while a request waited (the giver barged) that upkeep
 * takes back from its slot goes to that request, not to the idle list:
 * no item sits idle while a request waits. */
static void test_unpark_stale_serves_waiter(void)
{
    const int64_t hour = 3600LL * 1000000000;
    dbs__respool rp;
    pool_init(&rp, 1, 1, hour, hour);
    n_served = 0;
    dbs__rp_req own = {.done = note_done}, w = {.done = note_done, .arg = (void *)5};
    dbs__rp_item *it = get(&rp, &own, 1), *got = NULL;
    CHECK_EQ(dbs__rp_acquire(&rp, &w, 0, &got), DBS__RP_PENDING);
    CHECK(dbs__rp_park(&rp, it, 1, dbs__now_ns(), 0)); /* barging */
    CHECK_EQ(dbs__rp_unpark_stale(&rp, dbs__now_ns(), INT64_MAX), 0);
    CHECK_EQ(n_served, 1);
    CHECK(w.item == it && !w.queued);
    expect(&rp, 1, 0, 1, 0, 0);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    pool_end(&rp);
}

/* The idle list stays in order of idle time: an item upkeep takes back
 * from its slot, idle for long, goes toward the tail, so the most recently
 * returned is still handed out first (LIFO) and the stale one ages out. */
static void test_unpark_stale_order(void)
{
    dbs__respool rp;
    pool_init(&rp, 2, 2, 0, 0);
    dbs__rp_req own = {.done = note_done};
    dbs__rp_item *a = get(&rp, &own, 1), *b = get(&rp, &own, 2), *got = NULL;
    int64_t t0 = dbs__now_ns();
    CHECK(dbs__rp_park(&rp, a, 1, t0, 0));
    CHECK_EQ(dbs__rp_release(&rp, b, t0 + 1000, DBS__RP_KEEP), DBS__RP_IDLE);
    CHECK_EQ(dbs__rp_unpark_stale(&rp, t0 + 1000, t0), 0);
    expect(&rp, 2, 2, 0, 0, 0);
    CHECK_EQ(dbs__rp_acquire(&rp, &own, 0, &got), DBS__RP_READY);
    CHECK(got == b);
    CHECK_EQ(dbs__rp_release(&rp, got, t0 + 2000, DBS__RP_KEEP), DBS__RP_IDLE);
    pool_end(&rp);
}

/* Strict order is for a queue whose head has waited barge_ns: asked for
 * when nobody waits (an event loop's request served just before its limit
 * looks), it must not carry over to the next request, which is young. */
static void test_serve_in_order_empty(void)
{
    const int64_t hour = 3600LL * 1000000000;
    dbs__respool rp;
    pool_init(&rp, 1, 1, hour, hour);
    n_served = 0;
    dbs__rp_req own = {.done = note_done}, w = {.done = note_done, .arg = (void *)6};
    dbs__rp_item *it = get(&rp, &own, 1), *got = NULL;
    dbs__rp_serve_in_order(&rp); /* nobody waits: nothing to do */
    CHECK_EQ(dbs__rp_acquire(&rp, &w, 0, &got), DBS__RP_PENDING);
    /* w is young: its giver may still barge */
    CHECK(dbs__rp_park(&rp, it, 1, dbs__now_ns(), 0));
    CHECK(dbs__rp_unpark(&rp, 1, dbs__now_ns()) == it);
    CHECK_EQ(n_served, 0);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_HANDED);
    CHECK(w.item == it);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    pool_end(&rp);
}

/* Deadlines: a request past its deadline leaves the queue as a value (its
 * done does not run); a blocking wait on an item held for good ends with
 * EXPIRED. */
static void test_deadlines(void)
{
    dbs__respool rp;
    pool_init(&rp, 1, 1, 0, 0);
    n_served = 0;
    dbs__rp_req own = {.done = note_done}, a = {.done = note_done}, b = {.done = note_done};
    dbs__rp_item *it = get(&rp, &own, 1), *got = NULL;
    a.deadline = 1; /* long past */
    b.deadline = INT64_MAX;
    CHECK_EQ(dbs__rp_acquire(&rp, &a, 0, &got), DBS__RP_PENDING);
    CHECK_EQ(dbs__rp_acquire(&rp, &b, 0, &got), DBS__RP_PENDING);
    dbs__rp_req *gone = dbs__rp_expire(&rp, dbs__now_ns());
    CHECK(gone == &a && !a.next && !a.queued);
    expect(&rp, 1, 0, 1, 0, 1);
    dbs__rp_stats seen;
    CHECK_EQ(dbs__rp_wait(&rp, 0, dbs__now_ns() + 20 * 1000000, &got, &seen, NULL), DBS__RP_EXPIRED);
    CHECK_EQ(seen.waiting, 1); /* b still waits; the expired wait left */
    CHECK_EQ(n_served, 0);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_HANDED);
    CHECK(b.item == it);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    pool_end(&rp);
}

/* Cancel: a request still queued is simply removed; one served just before
 * its owner gave up is put back, the item going on to the next request. */
static void test_cancel(void)
{
    dbs__respool rp;
    pool_init(&rp, 1, 1, 0, 0);
    n_served = 0;
    dbs__rp_req own = {.done = note_done}, a = {.done = note_done}, b = {.done = note_done};
    dbs__rp_item *it = get(&rp, &own, 1), *got = NULL;
    CHECK_EQ(dbs__rp_acquire(&rp, &a, 0, &got), DBS__RP_PENDING);
    CHECK(dbs__rp_cancel(&rp, &a, true));
    expect(&rp, 1, 0, 1, 0, 0);
    CHECK_EQ(dbs__rp_acquire(&rp, &a, 0, &got), DBS__RP_PENDING);
    CHECK_EQ(dbs__rp_acquire(&rp, &b, 0, &got), DBS__RP_PENDING);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_HANDED);
    CHECK(a.item == it);
    CHECK(!dbs__rp_cancel(&rp, &a, true)); /* too late: put back */
    CHECK(!a.item && b.item == it);
    CHECK(!dbs__rp_cancel(&rp, &b, true));
    expect(&rp, 1, 1, 0, 0, 0);
    /* a reserved slot is put back too */
    CHECK_EQ(dbs__rp_acquire(&rp, &own, 0, &got), DBS__RP_READY);
    CHECK_EQ(dbs__rp_release(&rp, got, dbs__now_ns(), DBS__RP_DROP), DBS__RP_GONE_ASKED);
    closed(&rp, got);
    expect(&rp, 0, 0, 0, 0, 0);
    CHECK_EQ(dbs__rp_acquire(&rp, &own, 0, &got), DBS__RP_CREATE);
    CHECK_EQ(dbs__rp_acquire(&rp, &a, 0, &got), DBS__RP_PENDING);
    dbs__rp_create_failed(&rp);
    CHECK(a.may_create);
    CHECK(!dbs__rp_cancel(&rp, &a, true));
    expect(&rp, 0, 0, 0, 0, 0);
    pool_end(&rp);
}

/* The race itself, on two threads: one gives the item back at the moment
 * the other cancels its request. Either the cancel wins (done never runs,
 * the item goes idle) or the hand-off does (done runs, the cancel puts the
 * item back); never is it lost or counted twice. */
typedef struct race {
    dbs__respool rp;
    dbs__rp_item *it;
    atomic_int go, phase;
} race;

static void race_done(dbs__rp_req *r)
{
    atomic_fetch_add((atomic_int *)r->arg, 1);
}

static void *race_giver(void *arg)
{
    race *x = arg;
    for (int round = 1; round <= 2000; round++) {
        while (atomic_load(&x->go) != round) {
        }
        dbs__rp_release(&x->rp, x->it, dbs__now_ns(), DBS__RP_KEEP);
        atomic_store(&x->phase, round);
    }
    return NULL;
}

static void test_cancel_race(void)
{
    race x = {0};
    pool_init(&x.rp, 1, 1, 0, 0);
    dbs__rp_req own = {.done = note_done};
    x.it = get(&x.rp, &own, 1);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, race_giver, &x), 0);
    int won = 0, lost = 0;
    for (int round = 1; round <= 2000; round++) {
        atomic_int done = 0;
        dbs__rp_req r = {.done = race_done, .arg = &done};
        dbs__rp_item *got = NULL;
        CHECK_EQ(dbs__rp_acquire(&x.rp, &r, 0, &got), DBS__RP_PENDING);
        atomic_store(&x.go, round);
        for (int spin = round % 64; spin > 0; spin--)
            atomic_load(&x.phase);
        bool cancelled = dbs__rp_cancel(&x.rp, &r, true);
        while (atomic_load(&x.phase) != round) {
        }
        CHECK_EQ(atomic_load(&done), cancelled ? 0 : 1);
        CHECK(!r.item);
        won += cancelled;
        lost += !cancelled;
        expect(&x.rp, 1, 1, 0, 0, 0);
        CHECK_EQ(dbs__rp_acquire(&x.rp, &own, 0, &got), DBS__RP_READY);
        CHECK(got == x.it);
    }
    pthread_join(t, NULL);
    fprintf(stderr, "cancel race: cancelled %d, put back %d\n", won, lost);
    CHECK_EQ(dbs__rp_release(&x.rp, x.it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    pool_end(&x.rp);
}

/* A blocking wait another thread cancels (dbs__rp_waiter_cancel, the
 * worker of a cancelled event-loop unit): queued, it returns CANCELED at
 * once holding nothing; cancelled before, it never queues; racing a
 * release, the item ends either with the waiter (READY: its owner puts it
 * back) or with the pool, never lost and never twice. */
typedef struct wrace {
    dbs__respool rp;
    dbs__rp_waiter wt;
    dbs__rp_item *got;
    atomic_int st;
} wrace;

static void *waiter_main(void *arg)
{
    wrace *x = arg;
    dbs__rp_stats seen;
    atomic_store(&x->st, dbs__rp_wait(&x->rp, 0, INT64_MAX, &x->got, &seen, &x->wt));
    return NULL;
}

static int waiting_of(dbs__respool *rp)
{
    dbs__rp_stats s;
    dbs__rp_stats_get(rp, &s);
    return s.waiting;
}

static void test_waiter_cancel(void)
{
    wrace x = {0};
    pool_init(&x.rp, 1, 1, 0, 0);
    dbs__rp_req own = {.done = note_done};
    dbs__rp_item *it = get(&x.rp, &own, 1);
    dbs__rp_waiter_init(&x.wt);
    atomic_store(&x.st, -2);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, waiter_main, &x), 0);
    while (waiting_of(&x.rp) != 1)
        dbs__sleep_ms(1);
    dbs__rp_waiter_cancel(&x.wt);
    pthread_join(t, NULL); /* it waited with no deadline: a hang if not ended */
    CHECK_EQ(atomic_load(&x.st), DBS__RP_CANCELED);
    CHECK(x.got == NULL);
    expect(&x.rp, 1, 0, 1, 0, 0);
    /* cancelled stays cancelled: the next wait does not ask */
    CHECK_EQ(dbs__rp_release(&x.rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    dbs__rp_stats seen;
    CHECK_EQ(dbs__rp_wait(&x.rp, 0, INT64_MAX, &x.got, &seen, &x.wt), DBS__RP_CANCELED);
    CHECK(x.got == NULL);
    expect(&x.rp, 1, 1, 0, 0, 0);
    dbs__rp_waiter_destroy(&x.wt);

    /* the race: the holder gives the item back as the waiter is cancelled */
    it = get(&x.rp, &own, 1);
    int cancelled = 0, served = 0;
    for (int round = 0; round < 2000; round++) {
        dbs__rp_waiter_init(&x.wt);
        x.got = NULL;
        atomic_store(&x.st, -2);
        CHECK_EQ(pthread_create(&t, NULL, waiter_main, &x), 0);
        while (waiting_of(&x.rp) != 1)
            sched_yield();
        int out = -1;
        if (round % 2) {
            out = dbs__rp_release(&x.rp, it, dbs__now_ns(), DBS__RP_KEEP);
            dbs__rp_waiter_cancel(&x.wt);
        } else {
            dbs__rp_waiter_cancel(&x.wt);
            out = dbs__rp_release(&x.rp, it, dbs__now_ns(), DBS__RP_KEEP);
        }
        pthread_join(t, NULL);
        int st = atomic_load(&x.st);
        CHECK(dbs__rp_waiter_cancelled(&x.wt));
        if (st == DBS__RP_READY) {
            /* served first: the owner has it, and puts it back */
            CHECK_EQ(out, DBS__RP_HANDED);
            CHECK(x.got == it);
            served++;
        } else {
            CHECK_EQ(st, DBS__RP_CANCELED);
            CHECK_EQ(out, DBS__RP_IDLE);
            CHECK(x.got == NULL);
            expect(&x.rp, 1, 1, 0, 0, 0);
            CHECK_EQ(dbs__rp_acquire(&x.rp, &own, 0, &x.got), DBS__RP_READY);
            CHECK(x.got == it);
            cancelled++;
        }
        expect(&x.rp, 1, 0, 1, 0, 0);
        dbs__rp_waiter_destroy(&x.wt);
    }
    fprintf(stderr, "waiter cancel race: cancelled %d, served first %d\n", cancelled, served);
    CHECK(cancelled > 0);
    CHECK_EQ(dbs__rp_release(&x.rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    pool_end(&x.rp);
    CHECK_EQ(atomic_load(&unmade), atomic_load(&made));
}

/* Close with requests pending: each completes empty, the idle and parked
 * items come back to close, and what is still out is dropped on return. */
static void *close_waiter(void *arg)
{
    dbs__respool *rp = arg;
    dbs__rp_item *got = NULL;
    dbs__rp_stats seen;
    int st = dbs__rp_wait(rp, 0, INT64_MAX, &got, &seen, NULL);
    return (void *)(intptr_t)st;
}

static void test_close(void)
{
    dbs__respool rp;
    pool_init(&rp, 3, 3, 0, 0);
    n_served = 0;
    dbs__rp_req own = {.done = note_done};
    dbs__rp_item *a = get(&rp, &own, 1), *b = get(&rp, &own, 2), *c = get(&rp, &own, 3);
    CHECK(dbs__rp_park(&rp, b, 5, dbs__now_ns(), 0));
    CHECK_EQ(dbs__rp_release(&rp, c, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_IDLE);
    /* c is idle, b parked: take both so that requests queue */
    dbs__rp_item *got = NULL;
    CHECK_EQ(dbs__rp_acquire(&rp, &own, 0, &got), DBS__RP_READY);
    CHECK(got == c);
    CHECK_EQ(dbs__rp_acquire(&rp, &own, 0, &got), DBS__RP_READY);
    CHECK(got == b);
    CHECK(dbs__rp_park(&rp, b, 5, dbs__now_ns(), 0));
    /* the locked path takes an item parked for another token first */
    CHECK_EQ(dbs__rp_acquire(&rp, &own, 0, &got), DBS__RP_READY);
    CHECK(got == b);
    dbs__rp_req q1 = {.done = note_done, .arg = (void *)1};
    CHECK_EQ(dbs__rp_acquire(&rp, &q1, 0, &got), DBS__RP_PENDING);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, close_waiter, &rp), 0);
    for (;;) { /* until all three wait */
        dbs__rp_stats s;
        dbs__rp_stats_get(&rp, &s);
        if (s.waiting == 4)
            break;
        dbs__sleep_ms(1);
    }
    CHECK(dbs__rp_park(&rp, b, 5, dbs__now_ns(), 0) == false); /* people wait, strict */
    CHECK_EQ(dbs__rp_release(&rp, b, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_HANDED);
    CHECK(q1.item == b);
    CHECK_EQ(dbs__rp_release(&rp, b, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_HANDED);
    dbs__rp_item *back = dbs__rp_close(&rp);
    CHECK(back == NULL); /* nothing idle: one thread got b, a and c are out */
    int ready = 0, closed = 0;
    for (int i = 0; i < 3; i++) {
        void *st;
        pthread_join(t[i], &st);
        ready += (intptr_t)st == DBS__RP_READY;
        closed += (intptr_t)st == DBS__RP_CLOSED;
    }
    CHECK_EQ(ready, 1);
    CHECK_EQ(closed, 2);
    CHECK_EQ(dbs__rp_acquire(&rp, &own, 0, &got), DBS__RP_CLOSED);
    CHECK(!dbs__rp_park(&rp, a, 1, dbs__now_ns(), 0));
    CHECK_EQ(dbs__rp_release(&rp, a, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_GONE_CLOSED);
    CHECK_EQ(dbs__rp_release(&rp, b, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_GONE_CLOSED);
    CHECK_EQ(dbs__rp_release(&rp, c, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_GONE_CLOSED);
    unmake(a);
    unmake(b);
    unmake(c);
    expect(&rp, 0, 0, 0, 0, 0);
    CHECK(dbs__rp_close(&rp) == NULL);
    dbs__rp_destroy(&rp);

    /* a slot being filled when the pool closes: the item is not counted */
    pool_init(&rp, 1, 1, 0, 0);
    CHECK_EQ(dbs__rp_acquire(&rp, &own, 0, &got), DBS__RP_CREATE);
    CHECK(dbs__rp_close(&rp) == NULL);
    got = make(9);
    CHECK_EQ(dbs__rp_created(&rp, got, dbs__now_ns(), false), DBS__RP_CLOSED);
    unmake(got);
    expect(&rp, 0, 0, 0, 0, 0);
    dbs__rp_destroy(&rp);
}

/* Parking across threads: many threads, few items, every path at once
 * (park and unpark, the locked path, hand-off, barging, expiry of waits,
 * failed makes): afterwards every item is accounted for. */
enum { THREADS = 8, ROUNDS = 3000, SIZE = 3 };

typedef struct stress {
    dbs__respool rp;
    atomic_int holders, max_holders, fails;
} stress;

static void *stress_main(void *arg)
{
    stress *x = arg;
    static atomic_uint next_token;
    unsigned token = atomic_fetch_add(&next_token, 1) + 1;
    for (int i = 0; i < ROUNDS; i++) {
        int64_t now = dbs__now_ns();
        dbs__rp_item *it = dbs__rp_unpark(&x->rp, token, now);
        if (!it) {
            dbs__rp_stats seen;
            int st = dbs__rp_wait(&x->rp, 0, now + 2000000000LL, &it, &seen, NULL);
            if (st == DBS__RP_CREATE) {
                if ((token + (unsigned)i) % 7 == 0) { /* the constructor fails */
                    dbs__rp_create_failed(&x->rp);
                    atomic_fetch_add(&x->fails, 1);
                    continue;
                }
                it = make(i);
                CHECK_EQ(dbs__rp_created(&x->rp, it, dbs__now_ns(), false), DBS__RP_READY);
            } else if (st == DBS__RP_EXPIRED) {
                continue;
            } else {
                CHECK_EQ(st, DBS__RP_READY);
            }
        }
        int h = atomic_fetch_add(&x->holders, 1) + 1;
        int m = atomic_load(&x->max_holders);
        while (h > m && !atomic_compare_exchange_weak(&x->max_holders, &m, h)) {
        }
        ((num *)it->data)->value++;
        atomic_fetch_sub(&x->holders, 1);
        now = dbs__now_ns();
        if (i % 11 == 0) {
            CHECK_EQ(dbs__rp_release(&x->rp, it, now, DBS__RP_DROP), DBS__RP_GONE_ASKED);
            closed(&x->rp, it);
        } else if (!dbs__rp_park(&x->rp, it, token, now, 1000)) {
            enum dbs__rp_outcome o = dbs__rp_release(&x->rp, it, now, DBS__RP_KEEP);
            CHECK(o == DBS__RP_IDLE || o == DBS__RP_HANDED);
        }
    }
    return NULL;
}

static void test_stress(void)
{
    static stress x;
    atomic_store(&made, 0);
    atomic_store(&unmade, 0);
    pool_init(&x.rp, SIZE, SIZE, 20000, 20000 / 64);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, stress_main, &x), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK_INT(atomic_load(&x.max_holders), <=, SIZE);
    CHECK_INT(atomic_load(&x.fails), >, 0);
    dbs__rp_stats s;
    dbs__rp_stats_get(&x.rp, &s);
    CHECK_EQ(s.pending, 0);
    CHECK_EQ(s.waiting, 0);
    CHECK_EQ(s.in_use, s.parked);
    CHECK_EQ(s.open, s.idle + s.parked);
    CHECK_EQ(s.open, atomic_load(&made) - atomic_load(&unmade));
    pool_end(&x.rp);
    CHECK_EQ(atomic_load(&made), atomic_load(&unmade));
}

/* A request's wake runs after its done, once the pool's lock is released
 * (so a blocking owner's wake-up system call is never made with the lock
 * held), on the thread that served it and before the serving call
 * returns: for a hand-off, a slot passed on, and each request a close
 * completes. */
typedef struct woken {
    dbs__respool *rp;
    bool done_ran, lock_free, returned;
    int wakes;
} woken;

static void wk_done(dbs__rp_req *r)
{
    woken *w = r->arg;
    w->done_ran = true;
}

static void wk_wake(dbs__rp_req *r)
{
    woken *w = r->arg;
    CHECK(w->done_ran);
    CHECK(!w->returned);
    /* the pool's lock is free: this thread can take it */
    w->lock_free = pthread_mutex_trylock(&w->rp->mu) == 0;
    if (w->lock_free)
        pthread_mutex_unlock(&w->rp->mu);
    w->wakes++;
}

static void test_wake_unlocked(void)
{
    dbs__respool rp;
    pool_init(&rp, 1, 1, 0, 0);
    dbs__rp_req own = {.done = note_done};
    dbs__rp_item *it = get(&rp, &own, 1);

    /* a hand-off */
    woken a = {.rp = &rp};
    dbs__rp_req ra = {.done = wk_done, .wake = wk_wake, .arg = &a};
    dbs__rp_item *got = NULL;
    CHECK_EQ(dbs__rp_acquire(&rp, &ra, 0, &got), DBS__RP_PENDING);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_HANDED);
    a.returned = true;
    CHECK_EQ(a.wakes, 1);
    CHECK(a.lock_free);
    CHECK(ra.item == it);

    /* a slot passed on when the item dropped is closed, not before: until
     * then it is still there, and a new one would be one too many */
    woken b = {.rp = &rp};
    dbs__rp_req rb = {.done = wk_done, .wake = wk_wake, .arg = &b};
    CHECK_EQ(dbs__rp_acquire(&rp, &rb, 0, &got), DBS__RP_PENDING);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_DROP), DBS__RP_GONE_ASKED);
    CHECK(!b.done_ran && rb.queued);
    dbs__rp_req rx = {.done = note_done};
    CHECK_EQ(dbs__rp_acquire(&rp, &rx, 0, &got), DBS__RP_PENDING); /* no slot either */
    CHECK(dbs__rp_cancel(&rp, &rx, false));
    unmake(it);
    dbs__rp_left(&rp, 1);
    CHECK(!b.done_ran); /* counted; its slot goes on with pass_free */
    dbs__rp_pass_free(&rp);
    b.returned = true;
    CHECK_EQ(b.wakes, 1);
    CHECK(b.lock_free);
    CHECK(rb.may_create && !rb.item);
    it = make(2);
    CHECK_EQ(dbs__rp_created(&rp, it, dbs__now_ns(), false), DBS__RP_READY);

    /* requests completed empty by close */
    woken c = {.rp = &rp}, d = {.rp = &rp};
    dbs__rp_req rc = {.done = wk_done, .wake = wk_wake, .arg = &c};
    dbs__rp_req rd = {.done = wk_done, .wake = wk_wake, .arg = &d};
    CHECK_EQ(dbs__rp_acquire(&rp, &rc, 0, &got), DBS__RP_PENDING);
    CHECK_EQ(dbs__rp_acquire(&rp, &rd, 0, &got), DBS__RP_PENDING);
    CHECK(!dbs__rp_close(&rp));
    c.returned = d.returned = true;
    CHECK_EQ(c.wakes, 1);
    CHECK_EQ(d.wakes, 1);
    CHECK(c.lock_free && d.lock_free);
    CHECK(!rc.item && !rc.may_create && !rd.item && !rd.may_create);
    CHECK_EQ(dbs__rp_release(&rp, it, dbs__now_ns(), DBS__RP_KEEP), DBS__RP_GONE_CLOSED);
    unmake(it);
    dbs__rp_destroy(&rp);
}

int main(void)
{
    test_basic();
    test_overflow();
    test_upkeep();
    test_fifo();
    test_create_failed();
    test_barging();
    test_barging_shared_slot();
    test_unpark_stale_serves_waiter();
    test_serve_in_order_empty();
    test_unpark_stale_order();
    test_deadlines();
    test_cancel();
    test_cancel_race();
    test_waiter_cancel();
    test_close();
    test_stress();
    test_wake_unlocked();
    printf("ok\n");
    return 0;
}
