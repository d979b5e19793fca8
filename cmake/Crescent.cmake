# crescent_test(NAME SOURCES a_test.cc ... LIBS lib ... [LABELS l] [TIMEOUT s])
# One GoogleTest executable per call; each TEST becomes a ctest case.
# Tests run with the repository root as working directory so that
# tests/data/... paths resolve; the crescent binary is at $CRESCENT_BIN.
function(crescent_test name)
  if(NOT CRESCENT_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} crescent_testutil GTest::gtest GTest::gmock GTest::gtest_main)
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  gtest_discover_tests(${name}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
    PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "${T_LABELS}"
               ENVIRONMENT "CRESCENT_BIN=$<TARGET_FILE:crescent>;CRESCENT_SOURCE_DIR=${CMAKE_SOURCE_DIR}"
    DISCOVERY_TIMEOUT 60)
  add_dependencies(${name} crescent)
endfunction()
