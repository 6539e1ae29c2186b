/*
 * Tests for src/server/chat_template.c: the exact prompt each built-in format
 * renders (what the model's Hugging Face template gives with
 * add_generation_prompt=true), and recognizing formats from template text.
 */
#include "test.h"

#include "server/chat_template.h"

#include <string.h>

static const ag_chat_msg conversation[] = {
    {AG_STR_LIT("system"), AG_STR_LIT("You are terse.")},
    {AG_STR_LIT("user"), AG_STR_LIT("Hi!")},
    {AG_STR_LIT("assistant"), AG_STR_LIT(" Hello. ")},
    {AG_STR_LIT("user"), AG_STR_LIT("2+2?")},
};

static void expect_render(ag_chat_template t, const ag_chat_msg *m, size_t n, const char *want) {
    ag_buf out;
    ag_buf_init(&out);
    ag_chat_template_render(t, m, n, &out);
    assert_int_equal(out.err, AG_OK);
    assert_string_equal(out.data, want);
    ag_buf_deinit(&out);
}

static void test_chatml(void **state) {
    (void)state;
    expect_render(AG_CHAT_TEMPLATE_CHATML, conversation, 4,
                  "<|im_start|>system\nYou are terse.<|im_end|>\n"
                  "<|im_start|>user\nHi!<|im_end|>\n"
                  "<|im_start|>assistant\n Hello. <|im_end|>\n"
                  "<|im_start|>user\n2+2?<|im_end|>\n"
                  "<|im_start|>assistant\n");
}

static void test_llama3(void **state) {
    (void)state;
    expect_render(AG_CHAT_TEMPLATE_LLAMA3, conversation, 4,
                  "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void test_llama2(void **state) {
    (void)state;
    expect_render(AG_CHAT_TEMPLATE_LLAMA2, conversation, 4,
                  "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] 2+2? [/INST]");
    expect_render(AG_CHAT_TEMPLATE_LLAMA2, conversation + 1, 1, "<s>[INST] Hi! [/INST]");
}

static void test_mistral(void **state) {
    (void)state;
    expect_render(AG_CHAT_TEMPLATE_MISTRAL, conversation, 4,
                  "<s>[INST] You are terse.\n\nHi! [/INST] Hello. </s>[INST] 2+2? [/INST]");
}

static void test_developer_role_is_system(void **state) {
    (void)state;
    const ag_chat_msg m[] = {{AG_STR_LIT("developer"), AG_STR_LIT("D")}, {AG_STR_LIT("user"), AG_STR_LIT("U")}};
    expect_render(AG_CHAT_TEMPLATE_CHATML, m, 2, "<|im_start|>system\nD<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
}

/*
 * GLM's exact renderings from ../shared/refs/glm-spec.md section 10, which
 * match llama.cpp's tests/test-chat-template.cpp.  Conversation A ends with
 * the assistant and is listed without a generation prompt; we always ask for
 * the reply, so its string is our rendering up to the final prompt.
 */
static const ag_chat_msg glm_a[] = {{AG_STR_LIT("system"), AG_STR_LIT("You are a helpful assistant")},
                                    {AG_STR_LIT("user"), AG_STR_LIT("Hello")},
                                    {AG_STR_LIT("assistant"), AG_STR_LIT("Hi there")}};

static void test_chatglm4(void **state) {
    (void)state;
    expect_render(AG_CHAT_TEMPLATE_CHATGLM4, glm_a, 3,
                  "[gMASK]<sop><|system|>\nYou are a helpful assistant<|user|>\nHello<|assistant|>\nHi there"
                  "<|assistant|>\n");
    expect_render(AG_CHAT_TEMPLATE_CHATGLM4, glm_a, 2,
                  "[gMASK]<sop><|system|>\nYou are a helpful assistant<|user|>\nHello<|assistant|>\n");
    /* content is not trimmed; tool results are observations */
    const ag_chat_msg m[] = {{AG_STR_LIT("user"), AG_STR_LIT(" x ")}, {AG_STR_LIT("tool"), AG_STR_LIT("42")}};
    expect_render(AG_CHAT_TEMPLATE_CHATGLM4, m, 2, "[gMASK]<sop><|user|>\n x <|observation|>\n42<|assistant|>\n");
}

static void test_glmedge(void **state) {
    (void)state;
    expect_render(AG_CHAT_TEMPLATE_GLMEDGE, glm_a, 3,
                  "<|system|>\nYou are a helpful assistant<|user|>\nHello<|assistant|>\nHi there<|assistant|>");
    expect_render(AG_CHAT_TEMPLATE_GLMEDGE, glm_a, 2, "<|system|>\nYou are a helpful assistant<|user|>\nHello<|assistant|>");
}

static void test_detect(void **state) {
    (void)state;
    /* excerpts of the real templates' Jinja text */
    assert_int_equal(ag_chat_template_detect(AG_STR_LIT("{% for message in messages %}{{'<|im_start|>' + message['role']")),
                     AG_CHAT_TEMPLATE_CHATML);
    assert_int_equal(ag_chat_template_detect(AG_STR_LIT("{% set content = '<|start_header_id|>' + message['role']")),
                     AG_CHAT_TEMPLATE_LLAMA3);
    assert_int_equal(ag_chat_template_detect(AG_STR_LIT("'<<SYS>>\\n' + system_message ... bos_token + '[INST] '")),
                     AG_CHAT_TEMPLATE_LLAMA2);
    assert_int_equal(ag_chat_template_detect(AG_STR_LIT("{{ bos_token }}{% for message in messages %}{{ '[INST] ' + ")),
                     AG_CHAT_TEMPLATE_MISTRAL);
    assert_int_equal(ag_chat_template_detect(AG_STR_LIT("")), AG_CHAT_TEMPLATE_CHATML);
    assert_int_equal(ag_chat_template_detect(AG_STR_LIT("[gMASK]<sop>{% for item in messages %}{% if item['role'] == "
                                                        "'user' %}<|user|>\n{{ item['content'] }}")),
                     AG_CHAT_TEMPLATE_CHATGLM4);
    assert_int_equal(ag_chat_template_detect(AG_STR_LIT("{% for item in messages %}{% if item['role'] == 'system' %}"
                                                        "<|system|>\n{{ item['content'] }}{% elif item['role'] == 'user' "
                                                        "%}<|user|>\n{{ item['content'] }}{% endfor %}<|assistant|>")),
                     AG_CHAT_TEMPLATE_GLMEDGE);
    /* Phi-3 (<|end|>) shares GLM-Edge's role tokens but is not GLM */
    assert_int_equal(ag_chat_template_detect(AG_STR_LIT("{{'<|user|>' + '\n' + message['content'] + '<|end|>'}}"
                                                        "{{ '<|assistant|>' }}")),
                     AG_CHAT_TEMPLATE_CHATML);
    for (int t = 0; t < AG_CHAT_TEMPLATE_COUNT; t++)
        assert_int_equal(ag_chat_template_from_name(ag_chat_template_name((ag_chat_template)t)), t);
    assert_int_equal(ag_chat_template_from_name("jinja"), -1);
    assert_string_equal(ag_chat_template_end(AG_CHAT_TEMPLATE_CHATML), "<|im_end|>");
    assert_string_equal(ag_chat_template_end(AG_CHAT_TEMPLATE_LLAMA3), "<|eot_id|>");
    assert_string_equal(ag_chat_template_end(AG_CHAT_TEMPLATE_CHATGLM4), "<|user|>");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml),  cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_llama2),  cmocka_unit_test(test_mistral),
        cmocka_unit_test(test_developer_role_is_system), cmocka_unit_test(test_chatglm4),
        cmocka_unit_test(test_glmedge), cmocka_unit_test(test_detect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
