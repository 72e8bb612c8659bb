# PostgreSQL: the throwaway server fixture and the PostgreSQL-only tests.
# Included by tests/CMakeLists.txt when DBSCOPE_WITH_PG is on; DBSCOPE_PG_DIR
# is the server's directory for this build (each build has its own server).

add_test(NAME pg_start
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/pg_server.sh start ${DBSCOPE_PG_DIR})
set_tests_properties(pg_start PROPERTIES FIXTURES_SETUP pg_server
  LABELS pg TIMEOUT 120)
add_test(NAME pg_stop
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/pg_server.sh stop ${DBSCOPE_PG_DIR})
set_tests_properties(pg_stop PROPERTIES FIXTURES_CLEANUP pg_server
  LABELS pg TIMEOUT 60)

dbscope_test_pg(test_pg_leak pg)
dbscope_test_pg(test_pg_connect pg)
dbscope_test_pg(test_pg_roundtrips pg)
dbscope_test_pg(test_pg_rls stress)
dbscope_test_pg(test_pg_retry pg)
dbscope_test_pg(test_pg_failover pg)
# The restart takes the shared server down: nothing else may run meanwhile.
if(DBSCOPE_WITH_PG)
  add_test(NAME test_pg_restart COMMAND test_pg_failover restart)
  set_tests_properties(test_pg_restart PROPERTIES LABELS "pg;stress"
    TIMEOUT 300 FIXTURES_REQUIRED pg_server RUN_SERIAL TRUE
    ENVIRONMENT "DBSCOPE_TEST_URL_FILE=${DBSCOPE_PG_DIR}/url;DBSCOPE_PG_DIR=${DBSCOPE_PG_DIR}")
endif()
dbscope_test_pg(test_pg_types pg)
# bytea decoding that runs out of memory (__wrap_PQunescapeBytea)
if(DBSCOPE_WITH_PG)
  target_link_options(test_pg_types PRIVATE -Wl,--wrap=PQunescapeBytea)
endif()
# disk_full: a tablespace on a tiny tmpfs (root; else skipped).
dbscope_test_pg(test_pg_full pg)
if(DBSCOPE_WITH_PG)
  set_tests_properties(test_pg_full PROPERTIES SKIP_RETURN_CODE 77)
endif()
dbscope_test_pg(test_pg_reset pg)
dbscope_test_pg(test_pg_pgbouncer pg)
if(DBSCOPE_WITH_PG)
  set_tests_properties(test_pg_pgbouncer PROPERTIES SKIP_RETURN_CODE 77)
endif()
dbscope_test_pg(test_pg_bounds pg)
if(DBSCOPE_WITH_PG)
  target_sources(test_pg_bounds PRIVATE faultproxy.c)
endif()
# Replicas and failover: a primary and a synchronous standby of its own,
# started and stopped by the test program (tests/pg_replica.sh).
if(DBSCOPE_WITH_PG)
  dbscope_test_exe(test_pg_replica)
  target_sources(test_pg_replica PRIVATE faultproxy.c)
  target_include_directories(test_pg_replica PRIVATE ${PROJECT_SOURCE_DIR}/tools)
  add_test(NAME test_pg_replica COMMAND test_pg_replica
    ${CMAKE_CURRENT_SOURCE_DIR}/pg_replica.sh ${CMAKE_CURRENT_BINARY_DIR}/pg_replica)
  set_tests_properties(test_pg_replica PROPERTIES LABELS "pg;stress"
    TIMEOUT 900 RUN_SERIAL TRUE)
endif()
# The non-blocking methods an event loop drives (a_send, a_step, a_cancel).
dbscope_test_pg(test_pg_async threads)
if(DBSCOPE_WITH_PG)
  target_sources(test_pg_async PRIVATE faultproxy.c)
endif()
