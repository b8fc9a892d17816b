# The capture reader and the show report (included by captures/CMakeLists.txt). Kept apart
# from the writer's target: readers need Boost.JSON and protocol/ records, nothing else.
add_library(mailtap_capture_reader STATIC ${CMAKE_CURRENT_LIST_DIR}/reader.cpp ${CMAKE_CURRENT_LIST_DIR}/show.cpp)
target_link_libraries(mailtap_capture_reader PUBLIC mailtap_protocol Boost::json)
target_include_directories(mailtap_capture_reader PUBLIC ${PROJECT_SOURCE_DIR})
