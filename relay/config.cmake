add_library(mailtap_config STATIC ${CMAKE_CURRENT_LIST_DIR}/config.cpp)
target_link_libraries(mailtap_config PUBLIC mailtap_protocol mailtap_policies mailtap_config_reader)
target_include_directories(mailtap_config PUBLIC ${PROJECT_SOURCE_DIR})
