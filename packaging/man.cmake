# Builds mailtap.1.gz with help2man (Debian's help2man): the top-level --help and --version
# make the NAME, SYNOPSIS and OPTIONS; each subcommand's --help becomes a subsection of
# COMMANDS; packaging/mailtap.h2m adds SIGNALS, FILES and SEE ALSO.
# cmake -DMAILTAP=bin -DHELP2MAN=path -DGZIP=path -DSTATIC_INCLUDE=mailtap.h2m -DOUT=mailtap.1.gz -P man.cmake
foreach(var MAILTAP HELP2MAN GZIP STATIC_INCLUDE OUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "man.cmake: ${var} is not set")
  endif()
endforeach()

# Help text as roff: no-fill, backslashes escaped, minus signs as \- (a bare "-" may print as a
# hyphen, and an option copied from the page would not work), a leading dot or quote literal.
function(roff_literal text out)
  string(REPLACE "\\" "\\e" text "${text}")
  string(REPLACE "-" "\\-" text "${text}")
  string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" text "${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

# Every command the binary has, found from its own --help ("Subcommands:" sections, nested
# ones such as "replay server" included), so a new command is in the page without a change here.
function(help_of words out)
  execute_process(COMMAND "${MAILTAP}" ${words} --help OUTPUT_VARIABLE help RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "man.cmake: mailtap ${words} --help exited ${rc}")
  endif()
  set(${out} "${help}" PARENT_SCOPE)
endfunction()

function(subcommands_of help out)
  set(names "")
  string(FIND "${help}" "\nSubcommands:\n" at)
  if(NOT at EQUAL -1)
    string(SUBSTRING "${help}" ${at} -1 section)
    string(REGEX MATCHALL "\n  [a-z][a-z0-9-]*" found "${section}")
    foreach(name IN LISTS found)
      string(STRIP "${name}" name)
      list(APPEND names "${name}")
    endforeach()
  endif()
  set(${out} "${names}" PARENT_SCOPE)
endfunction()

set(include "[COMMANDS]\n")
function(document words)
  help_of("${words}" help)
  subcommands_of("${help}" children)
  if(children)
    foreach(child IN LISTS children)
      document("${words};${child}")
    endforeach()
    set(include "${include}" PARENT_SCOPE)
    return()
  endif()
  # CLI11 prints argv[0]: the page names the command, not the build tree's path.
  string(REPLACE "${MAILTAP}" "mailtap" help "${help}")
  roff_literal("${help}" help)
  string(REPLACE ";" " " title "${words}")
  string(APPEND include ".SS \"mailtap ${title}\"\n.nf\n${help}.fi\n")
  set(include "${include}" PARENT_SCOPE)
endfunction()

help_of("" top)
subcommands_of("${top}" commands)
foreach(command IN LISTS commands)
  document("${command}")
endforeach()
file(READ "${STATIC_INCLUDE}" static)
get_filename_component(dir "${OUT}" DIRECTORY)
set(generated "${dir}/mailtap.h2m")
file(WRITE "${generated}" "${include}\n${static}")

string(REGEX REPLACE "\\.gz$" "" page "${OUT}")
# --locale: help2man reads the help and the include in its locale, "C" unless told, where each
# byte of a UTF-8 character became "?" (the "µs" of --busy-poll-us printed "??s").
execute_process(COMMAND "${HELP2MAN}" --no-info --section=1 --source=mailtap --locale=C.UTF-8
                        "--name=inline SMTP relay that records, times, breaks and replays mail conversations"
                        "--include=${generated}" "--output=${page}" "${MAILTAP}"
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "man.cmake: help2man failed (${rc}): ${err}")
endif()
# -n: no name or time stamp in the .gz, so the same page builds the same bytes.
execute_process(COMMAND "${GZIP}" -9nf "${page}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "man.cmake: gzip failed (${rc})")
endif()
