#include <sqlite3.h>

/// Turns off SQLite's memory statistics, which take a process-wide mutex around every
/// allocation and free. Effective only before SQLite initialises (the first open); afterwards
/// it returns SQLITE_MISUSE and changes nothing. A function here because `sqlite3_config` is
/// variadic, which Swift cannot call.
static inline int lmsvr_sqlite3_disable_memory_statistics(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
