# MariaDB: the throwaway server fixture and the MariaDB-only tests.
# Included by tests/CMakeLists.txt when DBSCOPE_WITH_MYSQL is on;
# DBSCOPE_MYSQL_DIR is the server's directory for this build.

add_test(NAME mysql_start
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mysql_server.sh start ${DBSCOPE_MYSQL_DIR})
set_tests_properties(mysql_start PROPERTIES FIXTURES_SETUP mysql_server
  LABELS mysql TIMEOUT 120)
add_test(NAME mysql_stop
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mysql_server.sh stop ${DBSCOPE_MYSQL_DIR})
set_tests_properties(mysql_stop PROPERTIES FIXTURES_CLEANUP mysql_server
  LABELS mysql TIMEOUT 60)

# A second server whose InnoDB rolls back the whole transaction at a lock
# wait timeout, not just the statement (test_mysql rollback_on_timeout).
set(DBSCOPE_MYSQL_ROT_DIR ${DBSCOPE_MYSQL_DIR}_rot)
add_test(NAME mysql_rot_start
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mysql_server.sh start ${DBSCOPE_MYSQL_ROT_DIR}
    --innodb-rollback-on-timeout=ON)
set_tests_properties(mysql_rot_start PROPERTIES FIXTURES_SETUP mysql_server_rot
  LABELS mysql TIMEOUT 120)
add_test(NAME mysql_rot_stop
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mysql_server.sh stop ${DBSCOPE_MYSQL_ROT_DIR})
set_tests_properties(mysql_rot_stop PROPERTIES FIXTURES_CLEANUP mysql_server_rot
  LABELS mysql TIMEOUT 60)

# A third whose defaults are not dbscope's: it ignores the character set a
# client asks for at connect, quotes with ANSI_QUOTES and reads no backslash
# escapes, and takes packets of up to 40 MiB (test_mysql server_defaults).
set(DBSCOPE_MYSQL_SD_DIR ${DBSCOPE_MYSQL_DIR}_sd)
add_test(NAME mysql_sd_start
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mysql_server.sh start ${DBSCOPE_MYSQL_SD_DIR}
    --character-set-server=latin1 --collation-server=latin1_swedish_ci
    --skip-character-set-client-handshake
    --sql-mode=ANSI_QUOTES,NO_BACKSLASH_ESCAPES,STRICT_TRANS_TABLES
    --max-allowed-packet=40M)
set_tests_properties(mysql_sd_start PROPERTIES FIXTURES_SETUP mysql_server_sd
  LABELS mysql TIMEOUT 120)
add_test(NAME mysql_sd_stop
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mysql_server.sh stop ${DBSCOPE_MYSQL_SD_DIR})
set_tests_properties(mysql_sd_stop PROPERTIES FIXTURES_CLEANUP mysql_server_sd
  LABELS mysql TIMEOUT 60)

# A fourth in a time zone other than UTC, whose globals test_mysql
# init_connect sets (init_connect, autocommit): a server of its own, since
# they reach every new connection, other tests' included.
set(DBSCOPE_MYSQL_IC_DIR ${DBSCOPE_MYSQL_DIR}_ic)
add_test(NAME mysql_ic_start
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mysql_server.sh start ${DBSCOPE_MYSQL_IC_DIR}
    --default-time-zone=+05:30)
set_tests_properties(mysql_ic_start PROPERTIES FIXTURES_SETUP mysql_server_ic
  LABELS mysql TIMEOUT 120)
add_test(NAME mysql_ic_stop
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mysql_server.sh stop ${DBSCOPE_MYSQL_IC_DIR})
set_tests_properties(mysql_ic_stop PROPERTIES FIXTURES_CLEANUP mysql_server_ic
  LABELS mysql TIMEOUT 60)

# tests/test_mysql.c: one program, one test per part (its first argument).
if(DBSCOPE_WITH_MYSQL)
  dbscope_test_exe(test_mysql)
  foreach(part reset errors deadlock kill counter types connect timeout)
    add_test(NAME test_mysql_${part} COMMAND test_mysql ${part})
    set_tests_properties(test_mysql_${part} PROPERTIES LABELS "mysql"
      TIMEOUT 300 FIXTURES_REQUIRED mysql_server
      ENVIRONMENT "DBSCOPE_TEST_URL_FILE=${DBSCOPE_MYSQL_DIR}/url;DBSCOPE_MYSQL_DIR=${DBSCOPE_MYSQL_DIR}")
  endforeach()
  add_test(NAME test_mysql_rollback_on_timeout COMMAND test_mysql rollback_on_timeout)
  set_tests_properties(test_mysql_rollback_on_timeout PROPERTIES LABELS "mysql"
    TIMEOUT 300 FIXTURES_REQUIRED mysql_server_rot
    ENVIRONMENT "DBSCOPE_TEST_URL_FILE=${DBSCOPE_MYSQL_ROT_DIR}/url;DBSCOPE_MYSQL_DIR=${DBSCOPE_MYSQL_ROT_DIR}")
  add_test(NAME test_mysql_server_defaults COMMAND test_mysql server_defaults)
  set_tests_properties(test_mysql_server_defaults PROPERTIES LABELS "mysql"
    TIMEOUT 300 FIXTURES_REQUIRED mysql_server_sd
    ENVIRONMENT "DBSCOPE_TEST_URL_FILE=${DBSCOPE_MYSQL_SD_DIR}/url;DBSCOPE_MYSQL_DIR=${DBSCOPE_MYSQL_SD_DIR}")
  add_test(NAME test_mysql_init_connect COMMAND test_mysql init_connect)
  set_tests_properties(test_mysql_init_connect PROPERTIES LABELS "mysql"
    TIMEOUT 300 FIXTURES_REQUIRED mysql_server_ic
    ENVIRONMENT "DBSCOPE_TEST_URL_FILE=${DBSCOPE_MYSQL_IC_DIR}/url;DBSCOPE_MYSQL_DIR=${DBSCOPE_MYSQL_IC_DIR}")
  # The stall and the restart take the shared server down: nothing else may
# run meanwhile.
  add_test(NAME test_mysql_stall COMMAND test_mysql stall)
  set_tests_properties(test_mysql_stall PROPERTIES LABELS "mysql"
    TIMEOUT 300 FIXTURES_REQUIRED mysql_server RUN_SERIAL TRUE
    ENVIRONMENT "DBSCOPE_TEST_URL_FILE=${DBSCOPE_MYSQL_DIR}/url;DBSCOPE_MYSQL_DIR=${DBSCOPE_MYSQL_DIR}")
  add_test(NAME test_mysql_restart COMMAND test_mysql restart)
  set_tests_properties(test_mysql_restart PROPERTIES LABELS "mysql;stress"
    TIMEOUT 300 FIXTURES_REQUIRED mysql_server RUN_SERIAL TRUE
    ENVIRONMENT "DBSCOPE_TEST_URL_FILE=${DBSCOPE_MYSQL_DIR}/url;DBSCOPE_MYSQL_DIR=${DBSCOPE_MYSQL_DIR};DBSCOPE_MYSQL_SERVER_SH=${CMAKE_CURRENT_SOURCE_DIR}/mysql_server.sh")
endif()

# tests/test_mysql_faults.c: real faults through tests/faultproxy.c (a
# silent network, a reset, a listener that never answers, a send that
# stalls, a server that answers a byte at a time) and KILLs, one test per part.
if(DBSCOPE_WITH_MYSQL)
  dbscope_test_exe(test_mysql_faults faultproxy.c)
  foreach(part silent commit connect kill release reset loop send trickle)
    add_test(NAME test_mysql_faults_${part} COMMAND test_mysql_faults ${part})
    set_tests_properties(test_mysql_faults_${part} PROPERTIES LABELS "mysql;threads"
      TIMEOUT 300 FIXTURES_REQUIRED mysql_server
      ENVIRONMENT "DBSCOPE_TEST_URL_FILE=${DBSCOPE_MYSQL_DIR}/url;DBSCOPE_MYSQL_DIR=${DBSCOPE_MYSQL_DIR}")
  endforeach()
  # A name with several addresses, none answering: /etc/hosts of
  # tests/dns_silent.sh (root and unshare, else skipped).
  add_test(NAME test_mysql_faults_addresses COMMAND sh
    ${CMAKE_CURRENT_SOURCE_DIR}/dns_silent.sh $<TARGET_FILE:test_mysql_faults> addresses)
  set_tests_properties(test_mysql_faults_addresses PROPERTIES LABELS "mysql;threads"
    TIMEOUT 300 SKIP_RETURN_CODE 77 FIXTURES_REQUIRED mysql_server
    ENVIRONMENT "DBSCOPE_TEST_URL_FILE=${DBSCOPE_MYSQL_DIR}/url;DBSCOPE_MYSQL_DIR=${DBSCOPE_MYSQL_DIR}")
endif()
