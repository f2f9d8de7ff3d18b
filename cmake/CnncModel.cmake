# cnnc_add_model(<name> MODEL <model.yaml> [TARGETS <target>...])
#
# Compiles a model with `cnnc build` at build time and gives a static library to link, in the
# spirit of Halide's add_halide_library. <name> becomes the model's C prefix: the header is
# <name>.h and its functions are <name>_create, <name>_forward, ... (see docs/c-api.md).
#
#   include(CnncModel)            # or, with an installed cnnc: find_package(cnnc REQUIRED)
#   cnnc_add_model(mnist_cnn MODEL models/mnist_cnn.yaml)
#   target_link_libraries(my_program PRIVATE mnist_cnn)
#
# cnnc is the target cnnc inside cnnc's own build, cnnc::cnnc where find_package(cnnc) found an
# installed one, else CNNC_EXECUTABLE or the cnnc on the PATH.
# The first target (default: host) gives the library <name>; every further target gives
# <name>-<target> (cross builds: arm-64-linux, x86-64-linux-avx512, ...). The package is rebuilt
# when the model file or cnnc changes.
function(cnnc_add_model name)
  cmake_parse_arguments(ARG "" "MODEL" "TARGETS" ${ARGN})
  if(NOT ARG_MODEL)
    message(FATAL_ERROR "cnnc_add_model(${name}): MODEL <file.yaml> is required")
  endif()
  if(NOT ARG_TARGETS)
    set(ARG_TARGETS host)
  endif()
  get_filename_component(model "${ARG_MODEL}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  if(TARGET cnnc)  # cnnc's own build
    set(cnnc_command $<TARGET_FILE:cnnc>)
    set(cnnc_dependency cnnc)
  elseif(TARGET cnnc::cnnc)  # an installed cnnc, found by find_package(cnnc)
    set(cnnc_command $<TARGET_FILE:cnnc::cnnc>)
    set(cnnc_dependency $<TARGET_FILE:cnnc::cnnc>)
  else()
    find_program(CNNC_EXECUTABLE cnnc REQUIRED)
    set(cnnc_command ${CNNC_EXECUTABLE})
    set(cnnc_dependency ${CNNC_EXECUTABLE})
  endif()
  find_package(Threads REQUIRED)

  set(first TRUE)
  foreach(target IN LISTS ARG_TARGETS)
    if(first)
      set(library ${name})
      set(first FALSE)
    else()
      set(library ${name}-${target})
    endif()
    set(dir ${CMAKE_CURRENT_BINARY_DIR}/cnnc/${name}/${target})
    file(MAKE_DIRECTORY ${dir})
    add_custom_command(
      OUTPUT ${dir}/kernels.a ${dir}/${name}.h ${dir}/manifest.json
      COMMAND ${cnnc_command} build ${model} --target ${target} --name ${name} -o ${dir} --quiet
      DEPENDS ${model} ${cnnc_dependency}
      COMMENT "cnnc: compiling ${ARG_MODEL} for ${target}"
      VERBATIM)
    add_custom_target(${library}.package DEPENDS ${dir}/kernels.a ${dir}/${name}.h)
    add_library(${library} STATIC IMPORTED GLOBAL)
    set_target_properties(${library} PROPERTIES
      IMPORTED_LOCATION ${dir}/kernels.a
      INTERFACE_INCLUDE_DIRECTORIES ${dir}
      INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m")
    add_dependencies(${library} ${library}.package)
  endforeach()
endfunction()
