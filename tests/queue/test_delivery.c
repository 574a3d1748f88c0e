/*
 * Tests for queue/delivery.c: references, diagnostics, backoff.
 */
#include <criterion/criterion.h>

#include "queue/delivery.h"

Test(delivery, message_lives_until_its_last_delivery)
{
    struct envelope env;
    struct spool_extent ext = { 32, 100 };
    struct qmsg *m;
    struct delivery *a, *b;
    uint32_t r0 = 0, r1 = 1;

    env_init(&env);
    cr_assert_eq(env_add_rcpt(&env, SLICE_LIT("a@x.example"), SLICE_LIT("")), 0);
    cr_assert_eq(env_add_rcpt(&env, SLICE_LIT("b@y.example"), SLICE_LIT("")), 0);
    m = qmsg_new(0, NULL, -1, 1, &env, &ext, 1, 0);
    env_free(&env);
    cr_assert_not_null(m);
    a = delivery_new(m, NULL, 1, &r0, 1);
    b = delivery_new(m, NULL, 2, &r1, 1);
    /* the owner's routing reference */
    cr_assert_eq(atomic_fetch_sub(&m->refs, 1), 3);
    cr_assert_eq(delivery_pending(a), 1);
    a->state[0] = DLV_DELIVERED;
    cr_assert_eq(delivery_pending(a), 0);
    delivery_set_diag(b, 0, "450 4.2.0 try later");
    cr_assert_str_eq(b->diag[0], "450 4.2.0 try later");
    cr_assert_not(delivery_free(a));
    cr_assert(delivery_free(b));
    cr_assert_eq(m->env.nrcpt, 2);
    qmsg_free(m);
}

Test(delivery, backoff_doubles_between_bounds)
{
    cr_assert_eq(delivery_backoff(1, 300000, 4000000), 300000);
    cr_assert_eq(delivery_backoff(2, 300000, 4000000), 600000);
    cr_assert_eq(delivery_backoff(4, 300000, 4000000), 2400000);
    cr_assert_eq(delivery_backoff(5, 300000, 4000000), 4000000);
    cr_assert_eq(delivery_backoff(1000, 300000, 4000000), 4000000);
    cr_assert_eq(delivery_backoff(0, 1000, 1000), 1000);
}
