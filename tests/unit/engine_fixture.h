/* engine_fixture.h — shared by the unit tests that drive the engine: a
 * config loaded from YAML text, the embedded memory store and an engine
 * over them. Include after <cmocka.h>. */
#ifndef CP_TEST_ENGINE_FIXTURE_H
#define CP_TEST_ENGINE_FIXTURE_H

#include <stdlib.h>

#include "core/engine.h"
#include "helpers.h"
#include "store/memstore.h"

struct fixture {
    struct cp_config *cfg;
    struct memstore *ms;
    struct cp_engine e;
};

/* Load `yaml` (written to temporary file slot 0) or fail the test. */
static inline struct fixture *
fixture_new(const char *yaml)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[CP_ERR_MAX];

    f->cfg = cp_config_load(tmpfile_with(0, yaml), err);
    if (f->cfg == NULL)
        fail_msg("%s", err);
    f->ms = memstore_new(16);
    cp_engine_init(&f->e, f->cfg, &f->ms->base);
    return f;
}

/* A cmocka teardown for a fixture in *state. */
static inline int
fixture_teardown(void **state)
{
    struct fixture *f = *state;

    cp_engine_fini(&f->e);
    memstore_free(f->ms);
    cp_config_free(f->cfg);
    free(f);
    return 0;
}

#endif
